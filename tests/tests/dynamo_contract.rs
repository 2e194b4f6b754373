//! The store contract: the same suite against the in-memory store and DynamoDB Local
//! (AWS's own emulator), so unit tests over `MemoryStore` mean something in production.

use futures_util::future::join_all;
use tollbooth_admin::dynamo::DynamoStore;
use tollbooth_admin::members::create_member;
use tollbooth_admin::store::{Hit, Index, Item, ItemStore, MemoryStore, Put, Query, StoreError};
use tollbooth_tests::harness::DynamoLocal;

fn item(pk: &str, sk: &str, data: &str) -> Item {
    Item::new(pk, sk, data.to_owned())
}

async fn contract<S: ItemStore + Clone + 'static>(store: S) {
    assert_eq!(store.ping().await.unwrap(), "ACTIVE");
    // get / put / overwrite
    assert_eq!(store.get("A", "1").await.unwrap(), None);
    let a1 = item("A", "1", "{\"v\":1}")
        .gsi1("G", "b")
        .ttl(4_000_000_000);
    store.put(a1.clone(), Put::Upsert).await.unwrap();
    assert_eq!(store.get("A", "1").await.unwrap(), Some(a1.clone()));
    let a1b = item("A", "1", "{\"v\":2}").gsi1("G", "b");
    store.put(a1b.clone(), Put::Upsert).await.unwrap();
    assert_eq!(store.get("A", "1").await.unwrap(), Some(a1b.clone()));
    // conditional put
    assert_eq!(
        store.put(item("A", "1", "{}"), Put::IfAbsent).await,
        Err(StoreError::Conflict)
    );
    assert_eq!(store.get("A", "1").await.unwrap(), Some(a1b.clone()));
    store
        .put(
            item("A", "2", "{}").gsi1("G", "a").gsi2("H", "x"),
            Put::IfAbsent,
        )
        .await
        .unwrap();
    store
        .put(item("A", "3", "{}"), Put::IfAbsent)
        .await
        .unwrap();
    store
        .put(item("AB", "1", "{}"), Put::IfAbsent)
        .await
        .unwrap();

    // transactions: all or nothing
    let r = store
        .put_all(vec![
            (item("T", "new", "{}"), Put::IfAbsent),
            (item("A", "1", "{}"), Put::IfAbsent),
        ])
        .await;
    assert_eq!(r, Err(StoreError::Conflict));
    assert_eq!(
        store.get("T", "new").await.unwrap(),
        None,
        "a failed transaction wrote something"
    );
    store
        .put_all(vec![
            (item("T", "new", "{}"), Put::IfAbsent),
            (item("T", "other", "{}"), Put::Upsert),
        ])
        .await
        .unwrap();
    assert!(store.get("T", "other").await.unwrap().is_some());

    // queries: exact partition, prefix, order, limit, indexes
    let sks = |v: Vec<Item>| v.into_iter().map(|i| i.sk).collect::<Vec<_>>();
    assert_eq!(
        sks(store.query(Query::table("A", "")).await.unwrap()),
        ["1", "2", "3"]
    );
    assert_eq!(
        sks(store.query(Query::table("A", "")).await.unwrap()),
        ["1", "2", "3"]
    );
    assert_eq!(
        sks(store
            .query(Query::table("A", "").desc().limit(2))
            .await
            .unwrap()),
        ["3", "2"]
    );
    assert_eq!(
        sks(store.query(Query::table("A", "2")).await.unwrap()),
        ["2"]
    );
    assert!(store
        .query(Query::table("nobody", ""))
        .await
        .unwrap()
        .is_empty());
    let g = store
        .query(Query::index(Index::Gsi1, "G", ""))
        .await
        .unwrap();
    assert_eq!(sks(g), ["2", "1"], "gsi1 sorts by gsi1sk");
    let h = store
        .query(Query::index(Index::Gsi2, "H", "x"))
        .await
        .unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h.first().unwrap().gsi2, Some(("H".into(), "x".into())));

    // take: exactly one of many concurrent takers wins
    store
        .put(item("TOK", "#", "{\"t\":1}"), Put::Upsert)
        .await
        .unwrap();
    let takers = (0..8).map(|_| {
        let s = store.clone();
        tokio::spawn(async move { s.take("TOK", "#").await.unwrap() })
    });
    let won = join_all(takers)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_some())
        .count();
    assert_eq!(won, 1);
    assert_eq!(store.take("TOK", "#").await.unwrap(), None);

    // delete is idempotent
    store.delete("A", "3").await.unwrap();
    store.delete("A", "3").await.unwrap();
    assert_eq!(store.get("A", "3").await.unwrap(), None);

    // domain: unique email under concurrency (uniqueness item in one transaction)
    let signups = (0..4).map(|i| {
        let s = store.clone();
        tokio::spawn(async move {
            create_member(
                &s,
                "Race@Example.com",
                "race-password-1",
                Some(&format!("r{i}")),
                1,
            )
            .await
        })
    });
    let results = join_all(signups).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(ok, 1, "exactly one signup per email");
    for r in results {
        if let Err(e) = r.unwrap() {
            assert_eq!(e.status, 409);
        }
    }
    let members = store
        .query(Query::index(Index::Gsi1, "MEMBERS", ""))
        .await
        .unwrap();
    assert_eq!(members.len(), 1);

    // compare-and-swap on the version attribute: an item without one is version 0;
    // of concurrent writers that read one version exactly one commits.
    store.put(item("V", "1", "{}"), Put::Upsert).await.unwrap();
    store
        .put(item("V", "1", "{\"a\":1}").version(1), Put::IfVersion(0))
        .await
        .unwrap();
    assert_eq!(store.get("V", "1").await.unwrap().unwrap().version, Some(1));
    assert_eq!(
        store
            .put(item("V", "1", "{}").version(1), Put::IfVersion(0))
            .await,
        Err(StoreError::Conflict)
    );
    let writers = (0..6).map(|i| {
        let s = store.clone();
        tokio::spawn(async move {
            s.put_all(vec![
                (
                    item("V", "1", &format!("{{\"w\":{i}}}")).version(2),
                    Put::IfVersion(1),
                ),
                (item("V", &format!("side{i}"), "{}"), Put::Upsert),
            ])
            .await
        })
    });
    let won = join_all(writers)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(won, 1, "one versioned writer wins");
    // The losers' transactions wrote nothing (not even their other items).
    let sides = store.query(Query::table("V", "side")).await.unwrap();
    assert_eq!(sides.len(), 1);
    // An absent item is version 0.
    store
        .put(item("V", "new", "{}").version(1), Put::IfVersion(0))
        .await
        .unwrap();

    // the attempt counter: N concurrent hits, at most `limit` counted per window; the
    // window ends at first hit + window; after it, counting starts over.
    let hits = (0..12).map(|_| {
        let s = store.clone();
        tokio::spawn(async move { s.hit("CNT", "#", 5, 100, 1_000).await })
    });
    let results: Vec<Hit> = join_all(hits)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    let counted: Vec<u64> = results
        .iter()
        .filter_map(|h| match h {
            Hit::Counted { count } => Some(*count),
            Hit::Refused { .. } => None,
        })
        .collect();
    assert_eq!(counted.len(), 5, "{results:?}");
    let mut sorted = counted.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![1, 2, 3, 4, 5]);
    assert!(results
        .iter()
        .all(|h| matches!(h, Hit::Counted { .. } | Hit::Refused { until: 1_100 })));
    assert_eq!(
        store.hit("CNT", "#", 5, 100, 1_099).await.unwrap(),
        Hit::Refused { until: 1_100 }
    );
    assert_eq!(
        store.hit("CNT", "#", 5, 100, 1_100).await.unwrap(),
        Hit::Counted { count: 1 }
    );
    // Deleting the item resets the count.
    store.delete("CNT", "#").await.unwrap();
    assert_eq!(
        store.hit("CNT", "#", 5, 100, 1_101).await.unwrap(),
        Hit::Counted { count: 1 }
    );
}

#[tokio::test]
async fn test_contract_memory_store() {
    contract(MemoryStore::default()).await;
}

#[tokio::test]
async fn test_contract_dynamodb_local() {
    let dynamo = DynamoLocal::start().await.unwrap();
    let store = DynamoStore::local(&dynamo.endpoint, "contract");
    store.ensure_table().await.unwrap();
    // Idempotent.
    store.ensure_table().await.unwrap();
    contract(store).await;
}

#[tokio::test]
async fn test_dynamodb_query_paginates_past_one_page() {
    let dynamo = DynamoLocal::start().await.unwrap();
    let store = DynamoStore::local(&dynamo.endpoint, "pages");
    store.ensure_table().await.unwrap();
    // ~400 KB items × 5 > the 1 MB page size.
    let big = format!("\"{}\"", "x".repeat(300_000));
    for i in 0..5 {
        store
            .put(Item::new("P", format!("{i}"), big.clone()), Put::Upsert)
            .await
            .unwrap();
    }
    assert_eq!(store.query(Query::table("P", "")).await.unwrap().len(), 5);
}
