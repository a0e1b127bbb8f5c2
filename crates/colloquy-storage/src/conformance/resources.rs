//! Prompts, tools and configs ([`ResourceStore`]): version numbers, descriptions, renames,
//! listings, references between them, and accounts that never see each other's.

use super::support::*;
use crate::*;
use uuid::Uuid;

fn body(text: &str) -> NewVersion {
    NewVersion {
        body: format!("{{\"text\":\"{text}\"}}"),
        version_description: None,
        references: vec![],
        inline_prompt: None,
        now_ms: 0,
    }
}

fn at(mut v: NewVersion, now_ms: i64) -> NewVersion {
    v.now_ms = now_ms;
    v
}

fn stored(w: Written) -> ResourceVersion {
    match w {
        Written::Stored(v) => v,
        other => panic!("expected a stored version, got {other:?}"),
    }
}

async fn create(
    store: &dyn Store,
    who: &Principal,
    kind: ResourceKind,
    name: &str,
    now: i64,
) -> ResourceVersion {
    let id = Uuid::new_v4();
    stored(
        store
            .create_resource(who.user_id, kind, id, name, &at(body(name), now))
            .await
            .unwrap(),
    )
}

async fn add(
    store: &dyn Store,
    who: &Principal,
    kind: ResourceKind,
    id: Uuid,
    v: NewVersion,
) -> Written {
    store
        .add_resource_version(who.user_id, kind, id, &v)
        .await
        .unwrap()
}

async fn versions_of(store: &dyn Store, who: &Principal, kind: ResourceKind, id: Uuid) -> Vec<i64> {
    let filter = ResourceFilter {
        id: Some(id),
        ..Default::default()
    };
    let got = store
        .list_resources(who.user_id, kind, &filter, page(0, 100, true))
        .await
        .unwrap();
    assert_eq!(got.total as usize, got.items.len());
    got.items.iter().map(|v| v.version).collect()
}

pub async fn resource_versions(store: &dyn Store) {
    let who = new_account(store, true).await;
    let kind = ResourceKind::Prompt;
    let first = create(store, &who, kind, "Weather", 100).await;
    assert_eq!(first.version, 0, "a new resource starts at version 0");
    assert_eq!((first.created_on, first.modified_on), (100, 100));
    assert_eq!(first.name, "Weather");
    assert_eq!(first.body, "{\"text\":\"Weather\"}");
    assert_eq!(first.version_description, None);
    let id = first.id;

    let mut next = at(body("second"), 200);
    next.version_description = Some("more detail".into());
    let second = stored(add(store, &who, kind, id, next).await);
    assert_eq!(second.version, 1);
    assert_eq!(second.created_on, 100, "created_on is the first version's");
    assert_eq!(second.modified_on, 200, "modified_on is this version's");
    assert_eq!(second.version_description.as_deref(), Some("more detail"));
    let third = stored(add(store, &who, kind, id, at(body("third"), 300)).await);
    assert_eq!(third.version, 2);

    // Deleted numbers are never issued again.
    let gone = store
        .delete_resource(who.user_id, kind, id, Some(2))
        .await
        .unwrap();
    assert_eq!(gone, Deleted::Done);
    let fourth = stored(add(store, &who, kind, id, at(body("fourth"), 400)).await);
    assert_eq!(fourth.version, 3, "after deleting 2, the next version is 3");
    assert_eq!(versions_of(store, &who, kind, id).await, vec![0, 1, 3]);
    assert_eq!(
        store
            .delete_resource(who.user_id, kind, id, Some(2))
            .await
            .unwrap(),
        Deleted::NotFound,
        "a deleted version is not found again"
    );

    // Reads: a version, the newest, an unknown one.
    let got = |v| store.get_resource_version(who.user_id, kind, id, v);
    assert_eq!(got(Some(1)).await.unwrap(), Some(second.clone()));
    assert_eq!(got(None).await.unwrap(), Some(fourth.clone()));
    assert_eq!(got(Some(2)).await.unwrap(), None);
    assert_eq!(
        store
            .get_resource_version(who.user_id, ResourceKind::Tool, id, None)
            .await
            .unwrap(),
        None,
        "a prompt is not a tool"
    );

    // Only the description changes, and it moves modified_on.
    let described = store
        .describe_resource_version(who.user_id, kind, id, 0, Some("first try"), 500)
        .await
        .unwrap()
        .expect("version 0 exists");
    assert_eq!(described.version_description.as_deref(), Some("first try"));
    assert_eq!((described.created_on, described.modified_on), (100, 500));
    assert_eq!(described.body, first.body);
    let cleared = store
        .describe_resource_version(who.user_id, kind, id, 0, None, 600)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.version_description, None);
    assert_eq!(cleared.modified_on, 600);
    assert_eq!(
        store
            .describe_resource_version(who.user_id, kind, id, 2, Some("x"), 700)
            .await
            .unwrap(),
        None
    );

    // A rename renames every version and changes nothing else.
    assert!(store
        .rename_resource(who.user_id, kind, id, "Forecast")
        .await
        .unwrap());
    let filter = ResourceFilter {
        id: Some(id),
        ..Default::default()
    };
    let all = store
        .list_resources(who.user_id, kind, &filter, page(0, 10, true))
        .await
        .unwrap();
    assert!(all.items.iter().all(|v| v.name == "Forecast"));
    assert_eq!(
        all.items[1],
        ResourceVersion {
            name: "Forecast".into(),
            ..second
        }
    );
    assert!(!store
        .rename_resource(who.user_id, kind, Uuid::new_v4(), "x")
        .await
        .unwrap());
    assert_eq!(
        add(store, &who, kind, Uuid::new_v4(), body("x")).await,
        Written::NotFound
    );

    // Deleting the last version deletes the resource; so does deleting it whole.
    for v in [0, 1] {
        let d = store.delete_resource(who.user_id, kind, id, Some(v)).await;
        assert_eq!(d.unwrap(), Deleted::Done);
    }
    assert_eq!(versions_of(store, &who, kind, id).await, vec![3]);
    let d = store.delete_resource(who.user_id, kind, id, Some(3)).await;
    assert_eq!(d.unwrap(), Deleted::Done);
    assert_eq!(
        got(None).await.unwrap(),
        None,
        "the last version took the resource"
    );
    assert_eq!(
        add(store, &who, kind, id, body("x")).await,
        Written::NotFound
    );
    let tool = create(store, &who, ResourceKind::Tool, "t", 1).await;
    stored(add(store, &who, ResourceKind::Tool, tool.id, body("t1")).await);
    let d = store
        .delete_resource(who.user_id, ResourceKind::Tool, tool.id, None)
        .await;
    assert_eq!(d.unwrap(), Deleted::Done);
    assert_eq!(
        versions_of(store, &who, ResourceKind::Tool, tool.id).await,
        Vec::<i64>::new()
    );
    let d = store
        .delete_resource(who.user_id, ResourceKind::Tool, tool.id, None)
        .await;
    assert_eq!(d.unwrap(), Deleted::NotFound);
}

pub async fn resource_listings(store: &dyn Store) {
    let who = new_account(store, true).await;
    let kind = ResourceKind::Config;
    // Created out of id order and at the same millisecond, with versions in between.
    let a = create(store, &who, kind, "Alpha", 10).await;
    let b = create(store, &who, kind, "beta", 5).await;
    let c = create(store, &who, kind, "Alpha", 10).await;
    stored(add(store, &who, kind, b.id, at(body("b1"), 20)).await);
    stored(add(store, &who, kind, a.id, at(body("a1"), 30)).await);
    stored(add(store, &who, kind, b.id, at(body("b2"), 40)).await);
    create(store, &who, ResourceKind::Prompt, "Alpha", 1).await;

    let (first, second) = if a.id < c.id {
        (a.id, c.id)
    } else {
        (c.id, a.id)
    };
    let mut expected = vec![(b.id, 0), (b.id, 1), (b.id, 2)];
    for id in [first, second] {
        expected.push((id, 0));
        if id == a.id {
            expected.push((id, 1));
        }
    }
    let list = |filter: ResourceFilter, number, size| {
        let filter = filter.clone();
        async move {
            store
                .list_resources(who.user_id, kind, &filter, page(number, size, true))
                .await
                .unwrap()
        }
    };
    let all = list(ResourceFilter::default(), 0, 100).await;
    let ids: Vec<(Uuid, i64)> = all.items.iter().map(|v| (v.id, v.version)).collect();
    assert_eq!(ids, expected, "by created_on, then id, then version");
    assert_eq!(all.total, 6, "only configs are counted");

    // Pages of 4: exact totals, a partial last page, an empty page past the end.
    let p0 = list(ResourceFilter::default(), 0, 4).await;
    let p1 = list(ResourceFilter::default(), 1, 4).await;
    let p2 = list(ResourceFilter::default(), 2, 4).await;
    assert_eq!((p0.total, p1.total, p2.total), (6, 6, 6));
    assert_eq!((p0.items.len(), p1.items.len(), p2.items.len()), (4, 2, 0));
    assert_eq!(page(0, 4, true).total_pages(p0.total), 2);
    let joined: Vec<_> = p0
        .items
        .iter()
        .chain(&p1.items)
        .map(|v| (v.id, v.version))
        .collect();
    assert_eq!(joined, expected);

    let newest = ResourceFilter {
        most_recent_only: true,
        ..Default::default()
    };
    let recent = list(newest.clone(), 0, 100).await;
    let got: Vec<(Uuid, i64)> = recent.items.iter().map(|v| (v.id, v.version)).collect();
    let want: Vec<(Uuid, i64)> = expected
        .iter()
        .copied()
        .filter(|(id, v)| {
            *v == if *id == b.id {
                2
            } else if *id == a.id {
                1
            } else {
                0
            }
        })
        .collect();
    assert_eq!(got, want, "the newest version of each");
    assert_eq!(recent.total, 3);

    let named = |name: &str| ResourceFilter {
        name: Some(name.into()),
        ..Default::default()
    };
    assert_eq!(list(named("Alpha"), 0, 100).await.total, 3);
    assert_eq!(
        list(named("alpha"), 0, 100).await.total,
        0,
        "names match exactly"
    );
    assert_eq!(list(named("Alph"), 0, 100).await.total, 0);
    let mut both = named("Alpha");
    both.most_recent_only = true;
    assert_eq!(list(both, 0, 100).await.total, 2);
    let mut one = named("beta");
    one.id = Some(a.id);
    assert_eq!(list(one, 0, 100).await.total, 0);
}

/// A config version referencing `prompt` (fixed or latest) and `tools`.
fn config(prompt: Option<ResourceRef>, tools: &[ResourceRef]) -> NewVersion {
    let mut v = body("config");
    v.references = prompt.into_iter().chain(tools.iter().copied()).collect();
    v
}

fn r(kind: ResourceKind, id: Uuid, version: Option<i64>) -> ResourceRef {
    ResourceRef { kind, id, version }
}

pub async fn resource_references(store: &dyn Store) {
    use ResourceKind::{Config, Prompt, Tool};
    let who = new_account(store, true).await;
    let prompt = create(store, &who, Prompt, "p", 1).await;
    stored(add(store, &who, Prompt, prompt.id, body("p1")).await);
    let tool = create(store, &who, Tool, "t", 1).await;
    let spare = create(store, &who, Tool, "spare", 1).await;

    // Unknown references store nothing, not even a version number.
    for bad in [
        r(Prompt, Uuid::new_v4(), None),
        r(Prompt, prompt.id, Some(7)),
        r(Tool, prompt.id, None),
        r(Prompt, tool.id, Some(0)),
    ] {
        let id = Uuid::new_v4();
        let w = store
            .create_resource(who.user_id, Config, id, "c", &config(Some(bad), &[]))
            .await
            .unwrap();
        assert_eq!(w, Written::MissingReference(bad));
        assert_eq!(
            store
                .get_resource_version(who.user_id, Config, id, None)
                .await
                .unwrap(),
            None
        );
    }

    let cfg = stored(
        store
            .create_resource(
                who.user_id,
                Config,
                Uuid::new_v4(),
                "Assistant",
                &config(
                    Some(r(Prompt, prompt.id, Some(0))),
                    &[r(Tool, tool.id, None)],
                ),
            )
            .await
            .unwrap(),
    );
    let bad = add(
        store,
        &who,
        Config,
        cfg.id,
        config(None, &[r(Tool, Uuid::new_v4(), None)]),
    )
    .await;
    assert!(matches!(bad, Written::MissingReference(_)));
    let v1 = stored(
        add(
            store,
            &who,
            Config,
            cfg.id,
            config(None, &[r(Tool, spare.id, Some(0))]),
        )
        .await,
    );
    assert_eq!(v1.version, 1, "a refused version used no number");

    let held = |version| {
        Deleted::Referenced(vec![Referrer {
            config_id: cfg.id,
            name: "Assistant".into(),
            version,
        }])
    };
    // A fixed reference holds its version and the resource; others may go.
    let del = |kind, id, v| store.delete_resource(who.user_id, kind, id, v);
    assert_eq!(del(Prompt, prompt.id, Some(0)).await.unwrap(), held(0));
    assert_eq!(del(Prompt, prompt.id, None).await.unwrap(), held(0));
    assert_eq!(
        del(Prompt, prompt.id, Some(1)).await.unwrap(),
        Deleted::Done
    );
    // A reference to the latest holds the resource, so its last version too.
    assert_eq!(del(Tool, tool.id, Some(0)).await.unwrap(), held(0));
    stored(add(store, &who, Tool, tool.id, body("t1")).await);
    assert_eq!(
        del(Tool, tool.id, Some(0)).await.unwrap(),
        Deleted::Done,
        "1 is the latest now"
    );
    assert_eq!(del(Tool, tool.id, Some(1)).await.unwrap(), held(0));
    assert_eq!(del(Tool, spare.id, None).await.unwrap(), held(1));
    // Once the config versions are gone, so are their references.
    assert_eq!(del(Config, cfg.id, Some(0)).await.unwrap(), Deleted::Done);
    assert_eq!(del(Prompt, prompt.id, None).await.unwrap(), Deleted::Done);
    assert_eq!(del(Tool, tool.id, None).await.unwrap(), Deleted::Done);
    assert_eq!(del(Config, cfg.id, None).await.unwrap(), Deleted::Done);
    assert_eq!(del(Tool, spare.id, None).await.unwrap(), Deleted::Done);

    // A prompt made together with its config (`prompt: {text}`), in one transaction.
    let inline = Uuid::new_v4();
    let mut with_text = config(Some(r(Prompt, inline, Some(0))), &[]);
    with_text.inline_prompt = Some(InlinePrompt {
        id: inline,
        name: "Inline".into(),
        body: "{\"text\":\"hi\"}".into(),
    });
    with_text.now_ms = 77;
    let mut refused = with_text.clone();
    refused.references.push(r(Tool, Uuid::new_v4(), None));
    let id = Uuid::new_v4();
    let w = store
        .create_resource(who.user_id, Config, id, "Inline", &refused)
        .await
        .unwrap();
    assert!(matches!(w, Written::MissingReference(_)));
    assert_eq!(
        store
            .get_resource_version(who.user_id, Prompt, inline, None)
            .await
            .unwrap(),
        None,
        "a refused config leaves no prompt behind"
    );
    let made = stored(
        store
            .create_resource(who.user_id, Config, id, "Inline", &with_text)
            .await
            .unwrap(),
    );
    let p = store
        .get_resource_version(who.user_id, Prompt, inline, Some(0))
        .await
        .unwrap()
        .expect("the inline prompt exists");
    assert_eq!(
        (p.name.as_str(), p.body.as_str(), p.created_on),
        ("Inline", "{\"text\":\"hi\"}", 77)
    );
    assert_eq!(
        del(Prompt, inline, None).await.unwrap(),
        held_by(made.id, "Inline", 0)
    );
}

fn held_by(config_id: Uuid, name: &str, version: i64) -> Deleted {
    Deleted::Referenced(vec![Referrer {
        config_id,
        name: name.into(),
        version,
    }])
}

pub async fn resource_isolation(store: &dyn Store) {
    use ResourceKind::{Config, Prompt};
    let alice = new_account(store, true).await;
    let bob = new_account(store, false).await;
    let prompt = create(store, &alice, Prompt, "mine", 1).await;
    let id = prompt.id;
    assert_eq!(
        store
            .get_resource_version(bob.user_id, Prompt, id, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_resource_version(bob.user_id, Prompt, id, Some(0))
            .await
            .unwrap(),
        None
    );
    let everything = ResourceFilter::default();
    let bobs = store
        .list_resources(bob.user_id, Prompt, &everything, page(0, 10, true))
        .await;
    assert_eq!(bobs.unwrap().total, 0);
    let by_id = ResourceFilter {
        id: Some(id),
        ..Default::default()
    };
    let bobs = store
        .list_resources(bob.user_id, Prompt, &by_id, page(0, 10, true))
        .await;
    assert_eq!(bobs.unwrap().total, 0);
    assert!(!store
        .rename_resource(bob.user_id, Prompt, id, "theirs")
        .await
        .unwrap());
    let d = store
        .describe_resource_version(bob.user_id, Prompt, id, 0, Some("x"), 2)
        .await;
    assert_eq!(d.unwrap(), None);
    assert_eq!(
        add(store, &bob, Prompt, id, body("x")).await,
        Written::NotFound
    );
    assert_eq!(
        store
            .delete_resource(bob.user_id, Prompt, id, Some(0))
            .await
            .unwrap(),
        Deleted::NotFound
    );
    assert_eq!(
        store
            .delete_resource(bob.user_id, Prompt, id, None)
            .await
            .unwrap(),
        Deleted::NotFound
    );
    // Another account's prompt cannot be referenced.
    let theirs = r(Prompt, id, None);
    let w = store
        .create_resource(
            bob.user_id,
            Config,
            Uuid::new_v4(),
            "c",
            &config(Some(theirs), &[]),
        )
        .await;
    assert_eq!(w.unwrap(), Written::MissingReference(theirs));
    // A retention-disabled account keeps its resources like any other.
    let own = create(store, &bob, Prompt, "bob's", 3).await;
    assert_eq!(
        store
            .get_resource_version(bob.user_id, Prompt, own.id, None)
            .await
            .unwrap(),
        Some(own)
    );
    // Alice's prompt is untouched.
    assert_eq!(
        store
            .get_resource_version(alice.user_id, Prompt, id, None)
            .await
            .unwrap(),
        Some(prompt)
    );
}
