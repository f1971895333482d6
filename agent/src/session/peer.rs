//! The credential check: is the process at the other end of the socket the one the agent started
//! for the component it claims to be? A pure function of the kernel's answer (SO_PEERCRED), so it
//! is tested without processes.

use tonic::Status;

/// What the kernel says about the peer of a Unix socket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    /// The peer's pid (`None` when the platform does not report it).
    pub pid: Option<i32>,
    /// The peer's uid.
    pub uid: u32,
}

/// Accept `peer` as `component` when it runs as the agent's uid (or root) and is the expected
/// process or in its process group (components are spawned as process group leaders, maybe via
/// `/bin/sh -c`, whose children share the group). `group_of` looks up a pid's process group.
///
/// # Errors
///
/// `PERMISSION_DENIED` naming the component, the expected pid and the peer's pid (and uid).
pub(crate) fn check(
    component: &str,
    expected_pid: u32,
    peer: Peer,
    own_uid: u32,
    group_of: impl Fn(i32) -> Option<i32>,
) -> Result<(), Status> {
    if peer.uid != own_uid && peer.uid != 0 {
        return Err(Status::permission_denied(format!(
            "component {component} must run as the agent's uid {own_uid} (or root), but the \
             session comes from uid {}; the agent only accepts the processes it started",
            peer.uid
        )));
    }
    let Some(pid) = peer.pid else {
        return Err(Status::permission_denied(format!(
            "component {component}: the kernel did not report the peer's pid, so the agent cannot \
             check that the session comes from process {expected_pid}, which it started"
        )));
    };
    if i64::from(pid) == i64::from(expected_pid) {
        return Ok(());
    }
    let group = group_of(pid);
    if group.is_some_and(|g| i64::from(g) == i64::from(expected_pid)) {
        return Ok(());
    }
    let group = group.map_or_else(|| "unknown".to_string(), |g| g.to_string());
    Err(Status::permission_denied(format!(
        "component {component} runs in process {expected_pid} (and its process group), but the \
         session comes from pid {pid} (process group {group}); only the process the agent started \
         for {component}, or its children, may register as it"
    )))
}

/// The process group of `pid`, from the kernel.
pub(crate) fn process_group(pid: i32) -> Option<i32> {
    nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
        .ok()
        .map(|g| g.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN_UID: u32 = 1000;

    fn peer(pid: i32, uid: u32) -> Peer {
        Peer {
            pid: Some(pid),
            uid,
        }
    }

    #[test]
    fn the_expected_process_and_its_group_are_accepted() {
        assert!(check("c1", 42, peer(42, OWN_UID), OWN_UID, |_| None).is_ok());
        assert!(check("c1", 42, peer(43, OWN_UID), OWN_UID, |_| Some(42)).is_ok());
        assert!(check("c1", 42, peer(42, 0), OWN_UID, |_| None).is_ok());
    }

    #[test]
    fn other_processes_are_refused_with_both_pids() {
        let e = check("c2", 42, peer(77, OWN_UID), OWN_UID, |_| Some(70)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        for part in ["c2", "42", "77", "70"] {
            assert!(
                e.message().contains(part),
                "{part} missing: {}",
                e.message()
            );
        }
        let e = check("c2", 42, peer(77, OWN_UID), OWN_UID, |_| None).unwrap_err();
        assert!(e.message().contains("unknown"), "{}", e.message());
    }

    #[test]
    fn other_users_and_unknown_pids_are_refused() {
        let e = check("c1", 42, peer(42, 1001), OWN_UID, |_| Some(42)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("1001"), "{}", e.message());
        let anonymous = Peer {
            pid: None,
            uid: OWN_UID,
        };
        let e = check("c1", 42, anonymous, OWN_UID, |_| Some(42)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }
}
