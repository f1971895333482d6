//! The plain types a component sees in its callbacks, and their wire forms.

use std::collections::BTreeMap;

use nines_proto::amf::v1 as pb;

/// A component's HA state for one CSI (AIS `SaAmfHAStateT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HaState {
    /// Serve the CSI.
    Active,
    /// Be ready to take over: follow the active's state (from the checkpoint).
    Standby,
    /// Finish the work in progress, accept no new work, then report quiesced.
    Quiescing,
    /// Stopped serving (the work was handed over); stay ready to become active again.
    Quiesced,
}

impl HaState {
    /// The state's name in AIS style (`ACTIVE`, `STANDBY`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            HaState::Active => "ACTIVE",
            HaState::Standby => "STANDBY",
            HaState::Quiescing => "QUIESCING",
            HaState::Quiesced => "QUIESCED",
        }
    }

    /// The wire form.
    pub(crate) fn to_proto(self) -> pb::HaState {
        match self {
            HaState::Active => pb::HaState::Active,
            HaState::Standby => pb::HaState::Standby,
            HaState::Quiescing => pb::HaState::Quiescing,
            HaState::Quiesced => pb::HaState::Quiesced,
        }
    }

    fn from_proto(v: i32) -> Result<Self, String> {
        match pb::HaState::try_from(v) {
            Ok(pb::HaState::Active) => Ok(HaState::Active),
            Ok(pb::HaState::Standby) => Ok(HaState::Standby),
            Ok(pb::HaState::Quiescing) => Ok(HaState::Quiescing),
            Ok(pb::HaState::Quiesced) => Ok(HaState::Quiesced),
            Ok(pb::HaState::Unspecified) | Err(_) => Err(format!(
                "the agent sent HA state {v}, which this SDK does not know; upgrade the SDK"
            )),
        }
    }
}

impl std::fmt::Display for HaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the previous active left, for a CSI set to [`HaState::Active`] (AIS transition
/// descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Descriptor {
    /// A new assignment: there was no previous active.
    NewAssign,
    /// The previous active quiesced cleanly: its last checkpoint writes are complete.
    Quiesced,
    /// The previous active was lost without quiescing: its last work may be incomplete.
    NotQuiesced,
}

impl Descriptor {
    fn from_proto(v: i32) -> Option<Self> {
        match pb::TransitionDescriptor::try_from(v) {
            Ok(pb::TransitionDescriptor::NewAssign) => Some(Descriptor::NewAssign),
            Ok(pb::TransitionDescriptor::Quiesced) => Some(Descriptor::Quiesced),
            Ok(pb::TransitionDescriptor::NotQuiesced) => Some(Descriptor::NotQuiesced),
            Ok(pb::TransitionDescriptor::Unspecified) | Err(_) => None,
        }
    }
}

/// Assign, or change the HA state of, one CSI of this component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiSet {
    /// The service instance.
    pub si: String,
    /// The component service instance within it.
    pub csi: String,
    /// The HA state to take.
    pub ha_state: HaState,
    /// The assignment's fencing epoch: it only grows; put it on checkpoint writes
    /// ([`Session::epoch_for`](crate::Session::epoch_for)).
    pub epoch: u64,
    /// For [`HaState::Active`]: how the previous active left.
    pub descriptor: Option<Descriptor>,
    /// The CSI's attributes from the model.
    pub attributes: BTreeMap<String, String>,
    /// The active component (for standby; for active, the previous one), when known.
    pub active_component: Option<String>,
}

impl CsiSet {
    /// From the wire, refusing what this SDK cannot represent.
    pub(crate) fn from_proto(s: pb::CsiSet) -> Result<Self, String> {
        Ok(CsiSet {
            ha_state: HaState::from_proto(s.ha_state)?,
            descriptor: Descriptor::from_proto(s.descriptor),
            attributes: s.attributes.into_iter().collect(),
            active_component: Some(s.active_component).filter(|c| !c.is_empty()),
            si: s.si,
            csi: s.csi,
            epoch: s.epoch,
        })
    }
}

/// The recovery a component recommends when it reports an error on itself (AIS
/// `SaAmfRecommendedRecoveryT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// Let the configured recovery decide.
    NoRecommendation,
    /// Restart this component.
    ComponentRestart,
    /// Fail its service units' assignments over to their standbys.
    ComponentFailover,
    /// Move every assignment off this node gracefully.
    NodeSwitchover,
    /// Fail every assignment of this node over.
    NodeFailover,
    /// Fail the node over and reset it at once.
    NodeFailfast,
}

impl From<Recovery> for pb::Recovery {
    fn from(r: Recovery) -> Self {
        match r {
            Recovery::NoRecommendation => pb::Recovery::NoRecommendation,
            Recovery::ComponentRestart => pb::Recovery::ComponentRestart,
            Recovery::ComponentFailover => pb::Recovery::ComponentFailover,
            Recovery::NodeSwitchover => pb::Recovery::NodeSwitchover,
            Recovery::NodeFailover => pb::Recovery::NodeFailover,
            Recovery::NodeFailfast => pb::Recovery::NodeFailfast,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wire_csi_set_becomes_a_plain_one() {
        let wire = pb::CsiSet {
            si: "si1".into(),
            csi: "csi1".into(),
            ha_state: pb::HaState::Active as i32,
            epoch: 7,
            descriptor: pb::TransitionDescriptor::NotQuiesced as i32,
            attributes: [("k".to_string(), "v".to_string())].into_iter().collect(),
            active_component: String::new(),
        };
        let set = CsiSet::from_proto(wire.clone()).expect("valid");
        assert_eq!(set.ha_state, HaState::Active);
        assert_eq!(set.epoch, 7);
        assert_eq!(set.descriptor, Some(Descriptor::NotQuiesced));
        assert_eq!(set.attributes.get("k").map(String::as_str), Some("v"));
        assert_eq!(set.active_component, None);

        let unknown = pb::CsiSet {
            ha_state: 99,
            ..wire
        };
        let e = CsiSet::from_proto(unknown).expect_err("unknown state");
        assert!(e.contains("99"), "{e}");
    }
}
