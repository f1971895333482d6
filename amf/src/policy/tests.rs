//! Unit tests of behaviour the vectors do not reach: ack handling, instantiation preference,
//! unsupported models, serde of the runtime.

use super::*;

fn cfg(model: RedundancyModel, sus: usize, pref_inservice_sus: u32) -> SgConfig {
    SgConfig {
        name: "sg".into(),
        model,
        auto_adjust: false,
        auto_adjust_prob_ms: 0,
        auto_repair: true,
        pref_active_sus: 1,
        pref_standby_sus: 1,
        pref_inservice_sus,
        pref_assigned_sus: 0,
        max_active_sis_per_su: 0,
        max_standby_sis_per_su: 0,
        sus: (1..=sus)
            .map(|i| SuConfig {
                name: format!("SU{i}"),
                node: format!("N{i}"),
                rank: i as u32,
                failover: false,
                preinstantiable: true,
            })
            .collect(),
        sis: vec![SiConfig {
            name: "SI1".into(),
            rank: 1,
            pref_active: 1,
            pref_standby: 1,
            ranked_su: vec![],
        }],
        dependencies: vec![],
    }
}

fn ack(m: &Msg, kind: MsgKind, ok: bool) -> Ack {
    Ack {
        su: m.su.clone(),
        si: m.si.clone(),
        kind,
        ok,
    }
}

/// Acknowledges every batch until stable; returns the batches.
fn settle(cfg: &SgConfig, rt: &mut SgRuntime, first: Outcome) -> Vec<Vec<Msg>> {
    let mut batches = vec![first.messages];
    for _ in 0..32 {
        let p = pending(rt);
        if p.is_empty() {
            return batches.into_iter().filter(|b| !b.is_empty()).collect();
        }
        for m in p {
            let kind = if m.kind == MsgKind::Quiescing {
                MsgKind::Quiesced
            } else {
                m.kind
            };
            batches.push(acknowledge(cfg, rt, &ack(&m, kind, true)).messages);
        }
    }
    panic!("not stable");
}

#[test]
fn quiescing_completes_only_with_quiesced_ack() {
    let c = cfg(RedundancyModel::TwoN, 2, 0);
    let mut rt = SgRuntime::new(&c);
    let out = handle(&c, &mut rt, &SgEvent::Start);
    settle(&c, &mut rt, out);
    let out = handle(&c, &mut rt, &SgEvent::SuShutdown { su: "SU1".into() });
    assert_eq!(out.admin, Some(AdminResult::Ok));
    assert_eq!(su_admin_state(&rt, "SU1"), SuAdminState::ShuttingDown);
    let m = out.messages[0].clone();
    assert_eq!(m.kind, MsgKind::Quiescing);
    let o = acknowledge(&c, &mut rt, &ack(&m, MsgKind::Quiescing, true));
    assert!(
        o.messages.is_empty() && !is_stable(&rt),
        "quiescing started, not complete"
    );
    assert_eq!(susis(&rt)[0].2, HaState::Quiescing);
    assert_eq!(
        table(&c, &rt)["SI1"].active,
        vec!["SU1"],
        "quiescing counts as active"
    );
    let o = acknowledge(&c, &mut rt, &ack(&m, MsgKind::Quiesced, true));
    assert_eq!(su_admin_state(&rt, "SU1"), SuAdminState::Locked);
    assert_eq!(o.messages.len(), 1);
    assert_eq!(o.messages[0].kind, MsgKind::Active(Descriptor::Quiesced));
}

#[test]
fn stale_and_failed_acks_change_nothing() {
    let c = cfg(RedundancyModel::TwoN, 2, 0);
    let mut rt = SgRuntime::new(&c);
    let out = handle(&c, &mut rt, &SgEvent::Start);
    let m = out.messages[0].clone();
    let before = rt.clone();
    let stale = Ack {
        su: "SU2".into(),
        si: "SI1".into(),
        kind: MsgKind::Standby,
        ok: true,
    };
    assert_eq!(acknowledge(&c, &mut rt, &stale), Outcome::default());
    assert_eq!(
        acknowledge(&c, &mut rt, &ack(&m, MsgKind::Remove, true)),
        Outcome::default()
    );
    assert_eq!(
        acknowledge(&c, &mut rt, &ack(&m, m.kind, false)),
        Outcome::default()
    );
    assert_eq!(rt, before);
    assert_eq!(pending(&rt), vec![m]);
}

#[test]
fn admin_is_refused_while_busy() {
    let c = cfg(RedundancyModel::TwoN, 3, 0);
    let mut rt = SgRuntime::new(&c);
    handle(&c, &mut rt, &SgEvent::Start);
    for ev in [
        SgEvent::SuLock { su: "SU3".into() },
        SgEvent::SiLock { si: "SI1".into() },
        SgEvent::NodeLock { node: "N3".into() },
    ] {
        let before = rt.clone();
        assert_eq!(
            handle(&c, &mut rt, &ev).admin,
            Some(AdminResult::TryAgain),
            "{ev:?}"
        );
        assert_eq!(rt, before);
    }
    assert_eq!(
        handle(
            &c,
            &mut rt,
            &SgEvent::SuLock {
                su: "nosuch".into()
            }
        )
        .admin,
        Some(AdminResult::BadOperation)
    );
}

#[test]
fn unsupported_models_answer_not_supported() {
    for model in [
        RedundancyModel::NPlusM,
        RedundancyModel::NWay,
        RedundancyModel::NWayActive,
    ] {
        let c = cfg(model, 2, 0);
        let mut rt = SgRuntime::new(&c);
        assert!(!model_supported(model));
        assert_eq!(handle(&c, &mut rt, &SgEvent::Start), Outcome::default());
        let out = handle(&c, &mut rt, &SgEvent::SuLock { su: "SU1".into() });
        assert_eq!(out.admin, Some(AdminResult::NotSupported));
        assert!(is_stable(&rt));
        assert_eq!(table(&c, &rt).len(), 1, "every SI appears");
    }
}

#[test]
fn pref_inservice_leaves_a_non_instantiated_spare() {
    let c = cfg(RedundancyModel::TwoN, 3, 2);
    let mut rt = SgRuntime::new(&c);
    let out = handle(&c, &mut rt, &SgEvent::Start);
    settle(&c, &mut rt, out);
    assert!(su_in_service(&rt, "SU1") && su_in_service(&rt, "SU2"));
    assert!(!su_should_be_instantiated(&c, &rt, "SU3"));
    assert!(!su_in_service(&rt, "SU3"));
    // The standby fails abruptly: SU3 is now wanted, instantiated and made standby.
    let ev = SgEvent::SuFault {
        su: "SU2".into(),
        recovery: FaultRecovery::SuFailover,
    };
    let out = handle(&c, &mut rt, &ev);
    assert!(su_should_be_instantiated(&c, &rt, "SU3"));
    assert!(!su_enabled(&rt, "SU2"));
    let batches = settle(&c, &mut rt, out);
    assert_eq!(
        batches,
        vec![vec![Msg {
            su: "SU3".into(),
            si: "SI1".into(),
            kind: MsgKind::Standby
        }]]
    );
}

#[test]
fn node_lost_before_start_keeps_its_sus_out() {
    let c = cfg(RedundancyModel::NoRed, 2, 0);
    let mut rt = SgRuntime::new(&c);
    handle(&c, &mut rt, &SgEvent::NodeFailover { node: "N1".into() });
    let out = handle(&c, &mut rt, &SgEvent::Start);
    assert_eq!(
        out.messages,
        vec![Msg {
            su: "SU2".into(),
            si: "SI1".into(),
            kind: MsgKind::Active(Descriptor::NewAssign)
        }]
    );
    assert!(!su_in_service(&rt, "SU1"));
    assert!(!su_should_be_instantiated(&c, &rt, "SU1"));
}

#[test]
fn runtime_round_trips_through_serde() {
    let c = cfg(RedundancyModel::TwoN, 3, 0);
    let mut rt = SgRuntime::new(&c);
    let out = handle(&c, &mut rt, &SgEvent::Start);
    settle(&c, &mut rt, out);
    handle(&c, &mut rt, &SgEvent::SiSwap { si: "SI1".into() });
    let json = serde_json::to_string(&rt).expect("serialize");
    let back: SgRuntime = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, rt);
}
