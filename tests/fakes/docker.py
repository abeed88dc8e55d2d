#!/usr/bin/python3
# Fake docker for rollbackd tests. State lives in STATE (JSON): containers
# (name -> image, running), local images, and a registry images can be
# pulled from. Every argv is appended to LOG as one JSON array per line.
#
# "run_fails" (optional) maps an image to how `docker run` of it fails:
#   {"error": stderr line, "code": exit status (default 125),
#    "created": leave a created, not running container of that name behind,
#    "sleep": seconds to hang (after creating) before failing}
# `rm -f` removes a running container too; like older docker releases it
# fails on a missing one.
import json, sys, time

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

def fail(msg, code=1):
    sys.stderr.write(msg + "\n")
    sys.exit(code)

cs = st["containers"]
if args[0] == "inspect" and args[1:3] == ["--format", "{{.Config.Image}}"]:
    c = cs.get(args[3])
    if c is None:
        fail("Error: No such object: %s" % args[3])
    print(c["image"])
elif args[:2] == ["image", "inspect"]:
    if args[4] not in st["images"]:
        fail("Error: No such image: %s" % args[4])
    print("sha256:%040d" % st["images"].index(args[4]))
elif args[:2] == ["image", "ls"]:
    repo = args[4]
    for img in st["images"]:
        r, _, tag = img.rpartition(":")
        if r == repo:
            print(tag)
elif args[:2] == ["manifest", "inspect"]:
    if args[2] not in st.get("registry", []) and args[2] not in st["images"]:
        fail("no such manifest: %s" % args[2])
    print(json.dumps({"schemaVersion": 2, "name": args[2]}))
elif args[0] == "pull":
    if args[1] not in st.get("registry", []):
        fail("Error response from daemon: manifest for %s not found: manifest unknown" % args[1])
    st["images"].append(args[1])
    save()
    print("Status: Downloaded newer image for %s" % args[1])
elif args[0] == "stop":
    if args[1] not in cs:
        fail("Error response from daemon: No such container: %s" % args[1])
    cs[args[1]]["running"] = False
    save()
    print(args[1])
elif args[0] == "rm":
    force = args[1] == "-f"
    name = args[-1]
    c = cs.get(name)
    if c is None:
        fail("Error response from daemon: No such container: %s" % name)
    if c["running"] and not force:
        fail("Error response from daemon: cannot remove a running container")
    del cs[name]
    save()
    print(name)
elif args[:2] == ["run", "-d"] and args[2] == "--name":
    name, image, extra = args[3], args[-1], args[4:-1]
    if name in cs:
        fail('docker: Error response from daemon: Conflict. The container name "/%s" is already in use.' % name)
    if image not in st["images"]:
        fail("Unable to find image '%s' locally" % image)
    broken = st.get("run_fails", {}).get(image)
    if broken is not None:
        if broken.get("created"):
            cs[name] = {"image": image, "running": False, "status": "created", "args": extra}
            save()
        time.sleep(broken.get("sleep", 0))
        fail(broken["error"], broken.get("code", 125))
    cs[name] = {"image": image, "running": True, "args": extra}
    save()
    print("%064d" % len(cs))
else:
    fail("fake docker: unsupported command %r" % args)
