//! `[cluster]` against a real etcd: two nodes (two `Cluster`s in one
//! process, each with its own session and lease) contend for targets, fail
//! over, fence writes, forward commands; etcd goes down and comes back; a
//! TCP forwarder cuts one node off.

#[path = "common/etcd.rs"]
mod etcd;

use std::future::Future;
use std::time::{Duration, Instant};

use etcd::{Etcd, Proxy};
use rollbackd::cluster::{Authority, Cluster, ClusterError};
use rollbackd::config::{ClusterConfig, OnEtcdDown};
use rollbackd::decide::TargetState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const TTL: Duration = Duration::from_secs(2);

/// Fail with `what` (the likely hang) instead of hanging the suite.
async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

/// Poll `f` every 50 ms until it is `Some`; panic naming `what` after `limit`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Node {
    cluster: Cluster,
    token: CancellationToken,
    _tracker: TaskTracker,
}

impl Node {
    fn start(name: &str, url: &str, prefix: &str, on_down: OnEtcdDown) -> Node {
        let config = ClusterConfig {
            etcd: vec![url.parse().unwrap()],
            prefix: prefix.to_string(),
            node: Some(name.to_string()),
            lease_ttl: TTL,
            ca_file: None,
            client_cert: None,
            auth: None,
            on_etcd_down: on_down,
        };
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        let cluster = Cluster::spawn(
            &config,
            &tracker,
            token.clone(),
            rollbackd::metrics::handle(),
        )
        .expect("spawn cluster");
        Node {
            cluster,
            token,
            _tracker: tracker,
        }
    }

    async fn wait_held(&self) {
        let c = self.cluster.clone();
        eventually(Duration::from_secs(10), "node holds a lease", || {
            let c = c.clone();
            async move { c.held().then_some(()) }
        })
        .await;
    }

    /// What a SIGKILL does to the node's session: keepalives stop, the
    /// lease is not revoked.
    fn kill(&self) {
        self.token.cancel();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// What a test's timeout names: the likely place it hung.
const HUNG: &str = "etcd or a cluster call hung";

/// [`pair`] of `node-a` and `node-b`, both on `url`, both holding when
/// etcd is down.
async fn held_pair(url: &str, prefix: &str) -> (Node, Node) {
    pair(
        prefix,
        ("node-a", url, OnEtcdDown::Hold),
        ("node-b", url, OnEtcdDown::Hold),
    )
    .await
}

/// Two nodes on `prefix`, each through its own etcd URL and policy, once
/// both hold a lease.
async fn pair(
    prefix: &str,
    a: (&str, &str, OnEtcdDown),
    b: (&str, &str, OnEtcdDown),
) -> (Node, Node) {
    let a = Node::start(a.0, a.1, prefix, a.2);
    let b = Node::start(b.0, b.1, prefix, b.2);
    a.wait_held().await;
    b.wait_held().await;
    (a, b)
}

fn owner_node(a: &Authority) -> Option<String> {
    match a {
        Authority::Standby { owner } => Some(owner.node.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_owner_failover_and_fenced_writes() {
    within(Duration::from_secs(60), HUNG, async {
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(dir.path());
        let (a, b) = held_pair(&etcd.url(), "/t1/").await;
        assert!(*a.cluster.etcd_up().borrow());

        // Both contend at once: exactly one owns, the other is standby
        // and names it.
        let (ra, rb) = tokio::join!(a.cluster.authorize("web"), b.cluster.authorize("web"));
        let owners = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Authority::Owner { .. }))
            .count();
        assert_eq!(owners, 1, "a: {ra:?}\nb: {rb:?}");
        let (owner, standby, standby_auth) = if matches!(ra, Authority::Owner { .. }) {
            (&a, &b, &rb)
        } else {
            (&b, &a, &ra)
        };
        assert_eq!(
            owner_node(standby_auth).as_deref(),
            Some(owner.cluster.node())
        );
        assert!(!standby_auth.may_act());
        // Asking again keeps the lock (same lease), and status says who.
        let again = owner.cluster.authorize("web").await;
        assert_eq!(again.lease(), owner.cluster.lease(), "{again:?}");
        assert!(owner.cluster.owns("web") && !standby.cluster.owns("web"));
        let seen = standby.cluster.ownership("web").await.unwrap();
        assert!(seen.standby);
        assert_eq!(seen.owner.unwrap().node, owner.cluster.node());
        assert!(!owner.cluster.ownership("web").await.unwrap().standby);
        // Another target is free for the standby node.
        assert!(standby.cluster.authorize("api").await.may_act());

        // The owner publishes; a write by the standby node is refused by
        // etcd, and changes nothing.
        let mut state = TargetState::new("web");
        state.loop_guard = Some("v1".into());
        state.rollbacks.push(chrono::Utc::now());
        owner
            .cluster
            .publish(&state)
            .await
            .expect("owner publishes");
        let mut forged = TargetState::new("web");
        forged.loop_guard = Some("forged".into());
        match standby.cluster.publish(&forged).await {
            Err(ClusterError::NotOwner {
                target,
                owner: Some(o),
            }) => {
                assert_eq!(target, "web");
                assert_eq!(o.node, owner.cluster.node());
            }
            other => panic!("a standby node's write must be refused, got {other:?}"),
        }
        let stored: TargetState = standby.cluster.read_state("web").await.unwrap().unwrap();
        assert_eq!(stored.loop_guard.as_deref(), Some("v1"));

        // The owner dies without revoking (SIGKILL): the other node takes
        // over within lease_ttl + 1s, with the published state.
        owner.kill();
        let killed = Instant::now();
        let taken = eventually(
            TTL + Duration::from_secs(1),
            "standby takes over after the owner died",
            || {
                let c = standby.cluster.clone();
                async move {
                    match c.authorize("web").await {
                        a @ Authority::Owner { .. } => Some(a),
                        _ => None,
                    }
                }
            },
        )
        .await;
        eprintln!("took over {:?} after the kill", killed.elapsed());
        let Authority::Owner {
            shared_state: Some(shared),
            ..
        } = taken
        else {
            panic!("the new owner must get the published state: {taken:?}");
        };
        let adopted: TargetState = serde_json::from_value(shared).unwrap();
        assert_eq!(adopted, state, "the guard history survives the takeover");
        standby
            .cluster
            .publish(&adopted)
            .await
            .expect("new owner publishes");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_posted_anywhere_acts_once_on_the_owner() {
    within(Duration::from_secs(60), HUNG, async {
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(dir.path());
        let (a, b) = held_pair(&etcd.url(), "/t2/").await;
        assert!(a.cluster.authorize("web").await.may_act());
        assert!(!b.cluster.authorize("web").await.may_act());

        let mut inbox = a.cluster.commands("web");
        // Posted on B (twice the same approval, as a double click would).
        let approve = serde_json::json!({"approve": "web-1", "by": "alice"});
        let id1 = b.cluster.post_command("web", &approve).await.unwrap();
        let id2 = b.cluster.post_command("web", &approve).await.unwrap();
        assert_ne!(id1, id2);

        let first = within(
            Duration::from_secs(5),
            "the owner's inbox never saw the command",
            inbox.recv(),
        )
        .await;
        assert_eq!(first.stored.id, id1);
        assert_eq!(first.stored.from, "node-b");
        assert_eq!(first.stored.command, approve);
        // B may not take it; A takes it once; taking again finds it gone.
        assert!(matches!(
            b.cluster.take_command(&first).await,
            Err(ClusterError::NotOwner { .. })
        ));
        assert!(a.cluster.take_command(&first).await.unwrap());
        assert!(!a.cluster.take_command(&first).await.unwrap());
        // A second inbox (a restarted worker) sees only what is left.
        let mut other = a.cluster.commands("web");
        let second = within(Duration::from_secs(5), "second command", inbox.recv()).await;
        assert_eq!(second.stored.id, id2);
        let same = within(Duration::from_secs(5), "second inbox", other.recv()).await;
        assert_eq!(same.stored.id, id2);
        let takes = [
            a.cluster.take_command(&second).await.unwrap(),
            a.cluster.take_command(&same).await.unwrap(),
        ];
        assert_eq!(takes, [true, false], "a command acts exactly once");
        let (left, _) = a.cluster.pending_commands("web").await.unwrap();
        assert!(left.is_empty(), "{left:?}");

        // A command posted while the inbox waits wakes it (the watch).
        let c = b.cluster.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.post_command("web", &serde_json::json!({"pause": "web"}))
                .await
                .unwrap();
        });
        let started = Instant::now();
        let third = within(Duration::from_secs(5), "a later command", inbox.recv()).await;
        assert_eq!(third.stored.command["pause"], "web");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(a.cluster.take_command(&third).await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_means_no_action_and_recovers() {
    within(Duration::from_secs(90), HUNG, async {
        let dir = tempfile::tempdir().unwrap();
        let mut etcd = Etcd::start(dir.path());
        let (a, alone) = pair(
            "/t3/",
            ("node-a", &etcd.url(), OnEtcdDown::Hold),
            ("node-alone", &etcd.url(), OnEtcdDown::ActAlone),
        )
        .await;
        let auth = a.cluster.authorize("web").await;
        assert!(auth.may_act());
        let mut up = a.cluster.etcd_up();
        assert!(*up.borrow_and_update());

        etcd.stop();
        let stopped = Instant::now();
        within(TTL, "etcd_up did not turn false", up.wait_for(|u| !*u))
            .await
            .unwrap();
        eventually(
            TTL,
            "held() still true after lease_ttl without etcd",
            || {
                let c = a.cluster.clone();
                async move { (!c.held()).then_some(()) }
            },
        )
        .await;
        eprintln!("not held {:?} after etcd stopped", stopped.elapsed());
        assert!(
            !a.cluster.still_authorized("web", &auth),
            "no step may start"
        );
        // hold: never act; act_alone: act without a lock.
        assert!(matches!(
            a.cluster.authorize("web").await,
            Authority::Hold { .. }
        ));
        assert!(matches!(
            a.cluster.publish(&TargetState::new("web")).await,
            Err(e) if e.is_unavailable()
        ));
        let alone_auth = alone.cluster.authorize("api").await;
        assert_eq!(alone_auth, Authority::Alone);

        etcd.start_again();
        within(
            Duration::from_secs(20),
            "etcd_up did not come back",
            up.wait_for(|u| *u),
        )
        .await
        .unwrap();
        a.wait_held().await;
        // etcd keeps leases across its restart: the node's lock lives on
        // (or, had it expired, the lock is free again): either way it may
        // act again, and the `Alone` authority ends.
        assert!(a.cluster.authorize("web").await.may_act());
        a.cluster.publish(&TargetState::new("web")).await.unwrap();
        eventually(
            Duration::from_secs(10),
            "act_alone node sees etcd again",
            || {
                let c = alone.cluster.clone();
                let auth = alone_auth.clone();
                async move { (!c.still_authorized("api", &auth)).then_some(()) }
            },
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_owner_loses_its_targets_and_rejoins_as_standby() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("rollbackd=debug")
        .with_test_writer()
        .try_init();
    within(
        Duration::from_secs(90),
        "etcd, the proxy or a cluster call hung",
        async {
            let dir = tempfile::tempdir().unwrap();
            let etcd = Etcd::start(dir.path());
            let proxy = Proxy::start(etcd.client_port).await;
            let (a, b) = pair(
                "/t4/",
                ("node-a", &proxy.url(), OnEtcdDown::Hold),
                ("node-b", &etcd.url(), OnEtcdDown::Hold),
            )
            .await;
            let auth = a.cluster.authorize("web").await;
            assert!(auth.may_act(), "{auth:?}");
            a.cluster.publish(&TargetState::new("web")).await.unwrap();

            proxy.partition();
            let cut = Instant::now();
            eventually(
                TTL,
                "the cut-off node still believes it holds its lease",
                || {
                    let c = a.cluster.clone();
                    async move { (!c.held()).then_some(()) }
                },
            )
            .await;
            assert!(!a.cluster.still_authorized("web", &auth));
            assert!(!*a.cluster.etcd_up().borrow());
            eventually(
                TTL + Duration::from_secs(1),
                "the other node takes over",
                || {
                    let c = b.cluster.clone();
                    async move { c.authorize("web").await.may_act().then_some(()) }
                },
            )
            .await;
            eprintln!("taken over {:?} after the partition", cut.elapsed());

            proxy.heal();
            let mut up = a.cluster.etcd_up();
            within(
                Duration::from_secs(20),
                "the healed node never reached etcd again",
                up.wait_for(|u| *u),
            )
            .await
            .unwrap();
            a.wait_held().await;
            // Its old lease expired: it rejoins with a new one, as standby,
            // and its writes stay fenced.
            assert_ne!(a.cluster.lease(), auth.lease());
            assert!(!a.cluster.owns("web"));
            assert_eq!(
                owner_node(&a.cluster.authorize("web").await).as_deref(),
                Some("node-b")
            );
            assert!(matches!(
                a.cluster.publish(&TargetState::new("web")).await,
                Err(ClusterError::NotOwner { .. })
            ));
        },
    )
    .await;
}
