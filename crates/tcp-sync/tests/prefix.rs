//! Two deployments on one Redis, told apart by `FILESYNC_REDIS_PREFIX`: the
//! same user id in each (each has its own database) does not see the other
//! deployment's devices in `who`, and the other deployment's bus is silent.

mod common;

use common::*;
use filesync_core::config::Config;
use filesync_core::db::Backend;
use filesync_core::UserId;
use filesync_tcp_sync::Tuning;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_on_one_redis_keep_their_presence_apart() {
    let a = Cluster::new(Backend::Sqlite, true);
    let b = Cluster::new(Backend::Sqlite, false);
    let redis = a.redis.as_ref().unwrap().url();
    let node_a = a.node_with(Config { redis_prefix: "team-a".into(), ..a.config() }, Tuning::default()).await;
    let node_b = b
        .node_with(Config { redis_url: Some(redis), redis_prefix: "team-b".into(), ..b.config() }, Tuning::default())
        .await;
    let (alice, ta) = a.user("alice");
    let (bob, tb) = b.user("bob");
    // Both databases are new: the two people have the same id, which is what must not mix.
    assert_eq!(alice, bob);
    let (_ca, _ea) = connect(node_a.addr, &ta, "alice-laptop").await;
    let (_cb, _eb) = connect(node_b.addr, &tb, "bob-phone").await;

    let who = |node: &RunningNode| {
        let bus = node.node.bus().clone();
        async move {
            let mut names: Vec<String> = bus
                .presence()
                .devices_of(&[UserId(alice.0)])
                .await
                .expect("Redis answers")
                .into_iter()
                .map(|e| e.device_name)
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(who(&node_a).await, ["alice-laptop name"]);
    assert_eq!(who(&node_b).await, ["bob-phone name"]);
    node_a.shutdown().await.unwrap();
    node_b.shutdown().await.unwrap();
}
