//! Unit tests of the error mapping and the deadline's encoding.

use std::time::Duration;

use super::*;

#[test]
fn a_kernel_without_nf_tables_or_a_part_of_it_is_unsupported() {
    for errno in [
        Errno::ENOENT,
        Errno::EAFNOSUPPORT,
        Errno::EPROTONOSUPPORT,
        Errno::EOPNOTSUPP,
    ] {
        let socket = fence_error(
            "check",
            TxError::Socket {
                op: "socket",
                errno,
            },
        );
        assert!(
            matches!(&socket, FenceError::Unsupported { detail } if detail.contains("socket")),
            "{errno}: {socket:?}"
        );
        let refused = fence_error(
            "arm",
            TxError::Refused {
                about: "add table arp ha_vip".into(),
                errno,
            },
        );
        let FenceError::Unsupported { detail } = &refused else {
            panic!("{errno}: {refused:?}");
        };
        assert!(detail.contains("add table arp ha_vip"), "{detail}");
        let msg = refused.to_string();
        assert!(msg.contains("modprobe nf_tables"), "{msg}");
        assert!(msg.contains("fence.mode: lifetime"), "{msg}");
    }
}

#[test]
fn a_missing_permission_says_which_capability() {
    let e = fence_error(
        "arm",
        TxError::Refused {
            about: "add table inet ha_vip".into(),
            errno: Errno::EPERM,
        },
    );
    let FenceError::Kernel {
        action,
        table,
        detail,
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!((*action, *table), ("arm", "ha_vip"));
    assert!(detail.contains("Operation not permitted"), "{detail}");
    assert!(detail.contains("CAP_NET_ADMIN"), "{detail}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "failed to arm the precise fence (nftables table ha_vip): add table inet ha_vip: "
        ),
        "{msg}"
    );
}

#[test]
fn other_errors_name_the_message_and_keep_the_old_rules() {
    let e = fence_error(
        "clear",
        TxError::Refused {
            about: "delete table arp ha_vip".into(),
            errno: Errno::EINVAL,
        },
    );
    assert!(
        matches!(
            e,
            FenceError::Kernel {
                action: "clear",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("delete table arp ha_vip: Invalid argument")
    );
    let e = fence_error("arm", TxError::NoAnswer);
    assert!(
        e.to_string().contains("previous rules stay in force"),
        "{e}"
    );
}

#[test]
fn deadlines_count_nanoseconds_since_the_epoch() {
    assert_eq!(epoch_ns(UNIX_EPOCH), 0);
    assert_eq!(epoch_ns(UNIX_EPOCH - Duration::from_secs(1)), 0);
    let t = UNIX_EPOCH + Duration::new(1_764_654_000, 123_456_789);
    assert_eq!(epoch_ns(t), 1_764_654_000_123_456_789);
    assert_eq!(
        epoch_ns(UNIX_EPOCH + Duration::from_secs(u64::MAX / 2)),
        u64::MAX
    );
}
