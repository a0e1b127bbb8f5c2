//! The rules of a batch, on operations built here and a transaction in memory.

use super::*;

#[test]
fn nul_becomes_the_replacement_character() {
    assert!(matches!(storable_text("plain"), Cow::Borrowed("plain")));
    assert_eq!(storable_text("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
    assert_eq!(storable(None), None);
    assert_eq!(storable(Some("\0")).as_deref(), Some("\u{FFFD}"));
}

fn start(key: Uuid, user: Uuid, limit: Option<u32>) -> WriteOp {
    WriteOp::StartChat {
        api_key_id: key,
        chat: NewChat {
            id: Uuid::new_v4(),
            user_id: user,
            group: GroupChoice::New(Uuid::new_v4()),
            start_timestamp: 1,
            metadata: None,
            config_id: None,
            config_version: None,
            instance_id: Uuid::nil(),
            webhooks: Vec::new(),
        },
        events: vec![],
        max_active_chats: limit,
    }
}

#[test]
fn limits_and_revocations() {
    assert!(may_start_chat(2, 1));
    assert!(!may_start_chat(2, 2));
    assert!(!may_start_chat(0, 0));
    let (live, gone) = (Uuid::new_v4(), Uuid::new_v4());
    let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(1));
    let ops = [
        start(live, a, Some(1)),
        start(live, b, Some(1)),
        start(live, a, Some(3)),
        start(live, Uuid::new_v4(), None),
        start(gone, Uuid::new_v4(), Some(1)),
    ];
    let revoked = HashSet::from([gone]);
    assert_eq!(limited_accounts(&ops, &revoked), vec![b, a]);
    let mut rules = BatchRules::new(revoked, HashMap::new());
    assert!(matches!(
        rules.step(&ops[0]),
        Step::Start { limit: Some(1), .. }
    ));
    assert!(matches!(
        rules.step(&ops[4]),
        Step::Report(OpOutcome::KeyRevoked)
    ));
}

#[test]
fn chats_are_active_once_started_and_until_ended() {
    let key = Uuid::new_v4();
    let op = start(key, Uuid::new_v4(), None);
    let WriteOp::StartChat { chat, .. } = &op else {
        unreachable!()
    };
    let append = WriteOp::AppendEvents {
        api_key_id: key,
        chat_id: chat.id,
        events: vec![],
    };
    let end = WriteOp::EndChat {
        api_key_id: key,
        chat_id: chat.id,
        status: ChatStatus::UserEnded,
        end_timestamp: 2,
        events: vec![],
    };
    assert_eq!(chats_written(&[append.clone(), end.clone()]), vec![chat.id]);
    let mut rules = BatchRules::default();
    assert!(matches!(
        rules.step(&append),
        Step::Report(OpOutcome::ChatClosed)
    ));
    let group = rules.started(chat);
    assert!(matches!(rules.step(&append), Step::Append { group_id, .. } if group_id == group));
    assert!(matches!(
        rules.step(&end),
        Step::End {
            outcome: OpOutcome::Applied,
            ..
        }
    ));
    assert!(matches!(
        rules.step(&end),
        Step::Report(OpOutcome::ChatClosed)
    ));
}

#[test]
fn live_keys_resumed_groups() {
    let (live, gone) = (Uuid::new_v4(), Uuid::new_v4());
    let (g1, g2) = (Uuid::from_u128(2), Uuid::from_u128(1));
    let resume = |key: Uuid, g: Uuid| {
        let mut op = start(key, Uuid::new_v4(), None);
        if let WriteOp::StartChat { chat, .. } = &mut op {
            chat.group = GroupChoice::Resume(g);
        }
        op
    };
    let ops = [
        resume(live, g1),
        start(live, Uuid::new_v4(), None),
        resume(live, g2),
        resume(live, g1),
        resume(gone, Uuid::new_v4()),
    ];
    assert_eq!(resumed_groups(&ops, &HashSet::from([gone])), vec![g2, g1]);
}

/// Polls a future that never waits to its end.
fn at_once<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("the fake transaction never waits"),
    }
}

/// A transaction in memory: chats by owner, groups that are another account's, and
/// the statements run.
#[derive(Default)]
struct FakeTx {
    owners: HashMap<Uuid, Uuid>,
    active: HashSet<Uuid>,
    foreign_groups: HashSet<Uuid>,
    fail_counting: bool,
    log: Vec<&'static str>,
    hooks: HashMap<Uuid, crate::ChatWebhooks>,
    outbox: Vec<crate::NewDelivery>,
}

impl crate::WebhookTx for FakeTx {
    async fn insert_chat_webhooks(&mut self, h: &crate::ChatWebhooks) -> StoreResult<()> {
        self.hooks.insert(h.chat_id, h.clone());
        Ok(())
    }

    async fn chat_webhooks(&mut self, chat_id: Uuid) -> StoreResult<Option<crate::ChatWebhooks>> {
        Ok(self.hooks.get(&chat_id).cloned())
    }

    async fn set_custom_session_id(&mut self, chat_id: Uuid, csid: &str) -> StoreResult<()> {
        if let Some(h) = self.hooks.get_mut(&chat_id) {
            h.custom_session_id = Some(csid.to_string());
        }
        Ok(())
    }

    async fn insert_deliveries(&mut self, d: &[crate::NewDelivery]) -> StoreResult<()> {
        self.outbox.extend_from_slice(d);
        Ok(())
    }
}

impl BatchTx for FakeTx {
    async fn active_chats(&mut self, user_id: Uuid) -> StoreResult<u64> {
        self.log.push("count");
        if self.fail_counting {
            return Err(crate::StoreError::Database("count failed".into()));
        }
        Ok(self
            .active
            .iter()
            .filter(|c| self.owners[*c] == user_id)
            .count() as u64)
    }

    async fn create_chat(&mut self, chat: &NewChat) -> StoreResult<bool> {
        self.log.push("create");
        if let GroupChoice::Resume(g) = chat.group {
            if self.foreign_groups.contains(&g) {
                return Ok(false);
            }
        }
        self.owners.insert(chat.id, chat.user_id);
        self.active.insert(chat.id);
        Ok(true)
    }

    async fn end_chat(&mut self, chat_id: Uuid, _: ChatStatus, _: i64) -> StoreResult<()> {
        self.log.push("end");
        self.active.remove(&chat_id);
        Ok(())
    }
}

fn said(seq: i64, timestamp: i64) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        seq,
        timestamp,
        role: colloquy_wire::EventRole::User,
        event_type: colloquy_wire::EventType::UserMessage,
        message_text: None,
        emotion_features: None,
        metadata: None,
        related_event_id: None,
    }
}

#[test]
fn a_batch_applies_in_order_and_queues_its_events() {
    let (key, revoked_key, user) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let foreign = Uuid::new_v4();
    let with_events = |mut op: WriteOp, evs: Vec<NewEvent>| {
        if let WriteOp::StartChat { events, .. } = &mut op {
            *events = evs;
        }
        op
    };
    let a = with_events(start(key, user, Some(1)), vec![said(0, 10)]);
    let WriteOp::StartChat { chat: chat_a, .. } = &a else {
        unreachable!()
    };
    let b = start(key, user, Some(1));
    let mut c = start(key, user, Some(1));
    if let WriteOp::StartChat { chat, .. } = &mut c {
        chat.group = GroupChoice::Resume(foreign);
    }
    let WriteOp::StartChat { chat: chat_c, .. } = &c else {
        unreachable!()
    };
    let d = with_events(start(key, user, Some(1)), vec![said(0, 50)]);
    let WriteOp::StartChat { chat: chat_d, .. } = &d else {
        unreachable!()
    };
    let ops = vec![
        a.clone(),
        b.clone(),
        WriteOp::AppendEvents {
            api_key_id: key,
            chat_id: chat_a.id,
            events: vec![said(1, 30), said(2, 20)],
        },
        WriteOp::EndChat {
            api_key_id: revoked_key,
            chat_id: chat_a.id,
            status: ChatStatus::UserEnded,
            end_timestamp: 40,
            events: vec![said(3, 40)],
        },
        c.clone(),
        d.clone(),
        WriteOp::AppendEvents {
            api_key_id: revoked_key,
            chat_id: chat_d.id,
            events: vec![said(1, 60)],
        },
        WriteOp::CheckKey { api_key_id: key },
    ];
    let mut tx = FakeTx {
        foreign_groups: HashSet::from([foreign]),
        ..Default::default()
    };
    let rules = BatchRules::new(HashSet::from([revoked_key]), HashMap::new());
    let (outcomes, queued) = at_once(rules.apply(&ops, &mut tx)).unwrap();
    assert_eq!(
        outcomes,
        vec![
            OpOutcome::Applied,
            OpOutcome::TooManyChats,
            OpOutcome::Applied,
            OpOutcome::KeyRevoked,
            OpOutcome::GroupNotFound,
            OpOutcome::Applied,
            OpOutcome::KeyRevoked,
            OpOutcome::Applied,
        ]
    );
    assert_eq!(
        tx.log,
        ["count", "create", "count", "end", "count", "create", "count", "create"],
        "the limit is looked at before each limited start; a full account creates nothing"
    );
    assert!(!tx.owners.contains_key(&chat_c.id));
    assert_eq!(tx.active, HashSet::from([chat_d.id]));
    let order: Vec<(Uuid, i64)> = queued
        .events
        .iter()
        .map(|e| (e.chat_id, e.event.seq))
        .collect();
    assert_eq!(
        order,
        vec![
            (chat_a.id, 0),
            (chat_a.id, 1),
            (chat_a.id, 2),
            (chat_a.id, 3),
            (chat_d.id, 0)
        ],
        "the revoked append is not queued; the revoked end is"
    );
    assert!(queued.events.iter().all(|e| e.group_id
        == if e.chat_id == chat_a.id {
            chat_a.group.id()
        } else {
            chat_d.group.id()
        }));
    assert_eq!(
        queued.chats[&chat_a.id],
        ChatCounters {
            count: 4,
            first: 10,
            last: 40
        }
    );
    assert_eq!(queued.chats[&chat_d.id].count, 1);
    assert_eq!(queued.chats.len(), 2);
}

#[test]
fn a_failing_statement_fails_the_batch() {
    let mut tx = FakeTx {
        fail_counting: true,
        ..Default::default()
    };
    let ops = [
        start(Uuid::new_v4(), Uuid::new_v4(), None),
        start(Uuid::new_v4(), Uuid::new_v4(), Some(3)),
    ];
    let result = at_once(BatchRules::default().apply(&ops, &mut tx));
    assert!(result.is_err());
    assert_eq!(tx.log, ["create", "count"]);
}
