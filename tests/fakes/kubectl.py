#!/usr/bin/python3
# Fake kubectl for rollbackd tests. State lives in STATE (JSON); every argv
# is appended to LOG as one JSON array per line. Only the commands rollbackd
# issues are understood; anything else fails like kubectl does.
import json, sys

STATE = "@STATE@"
LOG = "@LOG@"

args = sys.argv[1:]
with open(LOG, "a") as f:
    f.write(json.dumps(args) + "\n")
with open(STATE) as f:
    st = json.load(f)

def save():
    with open(STATE, "w") as f:
        json.dump(st, f)

def opt(name):
    if name in args:
        return args[args.index(name) + 1]
    return None

def fail(msg, code=1):
    sys.stderr.write(msg + "\n")
    sys.exit(code)

if st.get("unreachable"):
    fail("The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?")
if opt("-n") != st.get("namespace", "prod"):
    fail('Error from server (NotFound): namespace "%s" not found' % opt("-n"))

if args[:2] == ["rollout", "history"]:
    dep = args[2].split("/", 1)[1]
    revs = st["deployments"].get(dep)
    if revs is None:
        fail('Error from server (NotFound): deployments.apps "%s" not found' % dep)
    print("deployment.apps/%s \nREVISION  CHANGE-CAUSE" % dep)
    for r in sorted(revs, key=int):
        print("%-9s <none>" % r)
    print()
elif args[:2] == ["rollout", "undo"]:
    dep = args[2].split("/", 1)[1]
    revs = st["deployments"][dep]
    to = [a for a in args if a.startswith("--to-revision=")]
    keys = sorted(revs, key=int)
    target = to[0].split("=", 1)[1] if to else keys[-2]
    if target not in revs:
        fail("error: unable to find specified revision %s in history" % target)
    image = revs.pop(target)
    revs[str(int(keys[-1]) + 1)] = image
    st["live_image"] = image
    save()
    print("deployment.apps/%s rolled back" % dep)
elif args[:2] == ["rollout", "status"]:
    if st.get("status_fails"):
        fail('error: deployment "web" exceeded its progress deadline')
    print('deployment "%s" successfully rolled out' % args[2].split("/", 1)[1])
elif args[:2] == ["get", "service"]:
    svc = st["services"].get(args[2])
    if svc is None:
        fail('Error from server (NotFound): services "%s" not found' % args[2])
    print(json.dumps(svc["selector"]))
elif args[:2] == ["get", "pods"]:
    want = dict(kv.split("=", 1) for kv in opt("-l").split(","))
    for pod in st["pods"]:
        if all(pod["labels"].get(k) == v for k, v in want.items()):
            print("%s\t%s" % (pod["name"], "True" if pod["ready"] else "False"))
elif args[:2] == ["patch", "service"]:
    patch = json.loads(opt("-p"))
    st["services"][args[2]]["selector"].update(patch["spec"]["selector"])
    save()
    print("service/%s patched" % args[2])
else:
    fail("fake kubectl: unsupported command %r" % args)
