//! The few nfnetlink messages of nf_tables that the precise fence sends,
//! encoded by hand, and the kernel's acknowledgements, decoded.
//!
//! Layout (include/uapi/linux/netlink.h, netfilter/nfnetlink.h,
//! netfilter/nf_tables.h): every message is a 16-byte `nlmsghdr` in host
//! byte order, a 4-byte `nfgenmsg`, then attributes (`nlattr`: length and
//! type in host order, payload padded to 4 bytes). nf_tables' integer
//! attributes are big-endian (`NLA_BE32`). A transaction is one datagram:
//! `NFNL_MSG_BATCH_BEGIN`, the messages, `NFNL_MSG_BATCH_END`; the kernel
//! applies all of it or none, and without the end message it checks every
//! message and then aborts (a dry run).

/// nf_tables' subsystem id within nfnetlink (`NFNL_SUBSYS_NFTABLES`).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

/// `NFT_MSG_NEWTABLE`.
pub(super) const NEWTABLE: u16 = 0;
/// `NFT_MSG_DELTABLE`.
pub(super) const DELTABLE: u16 = 2;
/// `NFT_MSG_NEWCHAIN`.
pub(super) const NEWCHAIN: u16 = 3;
/// `NFT_MSG_NEWRULE`.
pub(super) const NEWRULE: u16 = 6;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_CREATE`: create the object if it does not exist.
pub(super) const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND`: add the rule at the end of the chain.
pub(super) const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;

/// The address families (`NFPROTO_*`) of ha-vip's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// `NFPROTO_INET`: IPv4 and IPv6 packets in one table.
    Inet = 1,
    /// `NFPROTO_ARP`: ARP packets.
    Arp = 3,
}

impl Family {
    /// The name `nft list tables` prints.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Inet => "inet",
            Self::Arp => "arp",
        }
    }
}

/// A transaction under construction: one datagram of netlink messages.
#[derive(Debug)]
pub(super) struct Batch {
    buf: Vec<u8>,
    next_seq: u32,
    /// Start of the message being written.
    msg: Option<usize>,
    /// Starts of the nested attributes being written, innermost last.
    nests: Vec<usize>,
    /// Sequence number and description of every nf_tables message.
    messages: Vec<(u32, String)>,
    /// Start of the last nf_tables message.
    last: Option<usize>,
}

impl Batch {
    /// Starts a transaction whose messages are numbered from `first_seq`.
    pub(super) fn new(first_seq: u32) -> Self {
        let mut b = Self {
            buf: Vec::with_capacity(4096),
            next_seq: first_seq,
            msg: None,
            nests: Vec::new(),
            messages: Vec::new(),
            last: None,
        };
        b.control(NFNL_MSG_BATCH_BEGIN);
        b
    }

    /// A batch delimiter: `res_id` names the subsystem, no acknowledgement.
    fn control(&mut self, ty: u16) {
        let seq = self.take_seq();
        self.header(ty, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES);
        self.patch_len();
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        seq
    }

    fn header(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
        self.msg = Some(self.buf.len());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched later
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        // struct nfgenmsg: family, version NFNETLINK_V0, res_id (big-endian).
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    fn patch_len(&mut self) {
        let start = self.msg.take().expect("a message is open");
        let len = u32::try_from(self.buf.len() - start).expect("message under 4 GiB");
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Opens an nf_tables message `what` (described for error reports) on
    /// `family`.
    pub(super) fn begin(&mut self, what: u16, flags: u16, family: Family, about: String) {
        assert!(self.msg.is_none(), "previous message not ended");
        let seq = self.take_seq();
        self.messages.push((seq, about));
        self.last = Some(self.buf.len());
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | what;
        self.header(ty, NLM_F_REQUEST | flags, seq, family as u8, 0);
    }

    /// Closes the message opened by [`Batch::begin`].
    pub(super) fn end(&mut self) {
        assert!(self.nests.is_empty(), "nested attribute left open");
        self.patch_len();
    }

    /// An attribute with a raw payload.
    pub(super) fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = u16::try_from(4 + data.len()).expect("attribute under 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// A NUL-terminated string attribute.
    pub(super) fn str(&mut self, ty: u16, s: &str) {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.attr(ty, &data);
    }

    /// A big-endian u32 attribute (`NLA_BE32`).
    pub(super) fn be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// Opens a nested attribute; close it with [`Batch::close`].
    pub(super) fn open(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    /// Closes the innermost nested attribute.
    pub(super) fn close(&mut self) {
        let start = self.nests.pop().expect("a nested attribute is open");
        let len = u16::try_from(self.buf.len() - start).expect("attribute under 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// Ends the transaction. With `commit` false the end message is left
    /// out: the kernel checks every message and then aborts, so nothing
    /// changes.
    ///
    /// Only the last message asks for an acknowledgement: the kernel
    /// answers every failed message anyway, and sends all answers after
    /// the whole batch, so the last one's says the batch is done. One
    /// answer per message would overflow the receive buffer at a few
    /// hundred messages (ENOBUFS).
    pub(super) fn finish(mut self, commit: bool) -> Transaction {
        if let Some(at) = self.last {
            let flags = u16::from_ne_bytes([self.buf[at + 6], self.buf[at + 7]]) | NLM_F_ACK;
            self.buf[at + 6..at + 8].copy_from_slice(&flags.to_ne_bytes());
        }
        if commit {
            self.control(NFNL_MSG_BATCH_END);
        }
        Transaction {
            datagram: self.buf,
            last_seq: self.messages.last().map(|(seq, _)| *seq),
            messages: self.messages,
            next_seq: self.next_seq,
        }
    }
}

/// A finished transaction: what to send and which answers to wait for.
#[derive(Debug)]
pub(super) struct Transaction {
    /// The datagram.
    pub(super) datagram: Vec<u8>,
    /// Sequence number and description of each nf_tables message.
    pub(super) messages: Vec<(u32, String)>,
    /// The message whose acknowledgement ends the transaction.
    pub(super) last_seq: Option<u32>,
    /// The first sequence number after this transaction's.
    pub(super) next_seq: u32,
}

/// One `NLMSG_ERROR` answer: `errno` 0 is a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ack {
    /// The sequence number of the message it answers.
    pub(super) seq: u32,
    /// The positive errno, or 0.
    pub(super) errno: i32,
}

/// The received datagram is not valid netlink.
#[derive(Debug, thiserror::Error)]
#[error("malformed netlink answer from the kernel at byte {at} of {len}")]
pub(super) struct Malformed {
    at: usize,
    len: usize,
}

/// Decodes the acknowledgements in a received datagram; other messages
/// (none are expected) are skipped.
pub(super) fn parse_acks(buf: &[u8]) -> Result<Vec<Ack>, Malformed> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= NLMSG_HDRLEN {
        let bad = Malformed { at, len: buf.len() };
        let u32_at = |i: usize| u32::from_ne_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
        let len = u32_at(at) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - at {
            return Err(bad);
        }
        let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        let seq = u32_at(at + 8);
        if ty == NLMSG_ERROR {
            if len < NLMSG_HDRLEN + 4 {
                return Err(bad);
            }
            let err = i32::from_ne_bytes(
                buf[at + NLMSG_HDRLEN..at + NLMSG_HDRLEN + 4]
                    .try_into()
                    .expect("4 bytes"),
            );
            out.push(Ack {
                seq,
                errno: err.saturating_neg(),
            });
        }
        at += (len + 3) & !3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_ne_bytes([b[i], b[i + 1]])
    }
    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes(b[i..i + 4].try_into().unwrap())
    }

    #[test]
    fn a_batch_is_begin_messages_end_with_consecutive_sequence_numbers() {
        let mut b = Batch::new(100);
        b.begin(NEWTABLE, NLM_F_CREATE, Family::Arp, "add table".into());
        b.str(1, "ha_vip");
        b.end();
        let tx = b.finish(true);
        let d = &tx.datagram;
        // BATCH_BEGIN: 20 bytes, res_id = NFNL_SUBSYS_NFTABLES big-endian.
        assert_eq!(u32_at(d, 0), 20);
        assert_eq!(u16_at(d, 4), 0x10);
        assert_eq!(u16_at(d, 6), NLM_F_REQUEST);
        assert_eq!(u32_at(d, 8), 100);
        assert_eq!(&d[16..20], &[0, 0, 0, 10]);
        // NEWTABLE: 16 + 4 + attribute (4 + "ha_vip\0" = 11, padded 12).
        let m = 20;
        assert_eq!(u32_at(d, m), 32);
        assert_eq!(u16_at(d, m + 4), 10 << 8);
        assert_eq!(u16_at(d, m + 6), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(u32_at(d, m + 8), 101);
        assert_eq!(&d[m + 16..m + 20], &[3, 0, 0, 0], "family arp, v0");
        assert_eq!(u16_at(d, m + 20), 11, "attribute length excludes padding");
        assert_eq!(u16_at(d, m + 22), 1);
        assert_eq!(&d[m + 24..m + 32], b"ha_vip\0\0");
        // BATCH_END.
        let e = 52;
        assert_eq!(u32_at(d, e), 20);
        assert_eq!(u16_at(d, e + 4), 0x11);
        assert_eq!(u32_at(d, e + 8), 102);
        assert_eq!(d.len(), 72);
        assert_eq!(tx.messages, vec![(101, "add table".to_owned())]);
        assert_eq!(tx.last_seq, Some(101));
    }

    #[test]
    fn only_the_last_message_asks_for_an_answer() {
        let mut b = Batch::new(1);
        for what in [NEWTABLE, DELTABLE, NEWTABLE] {
            b.begin(what, 0, Family::Inet, "table".into());
            b.str(1, "t");
            b.end();
        }
        let tx = b.finish(true);
        let d = &tx.datagram;
        let flags: Vec<u16> = (0..3).map(|i| u16_at(d, 20 + i * 28 + 6)).collect();
        assert_eq!(
            flags,
            [NLM_F_REQUEST, NLM_F_REQUEST, NLM_F_REQUEST | NLM_F_ACK]
        );
        assert_eq!(tx.last_seq, Some(4));
    }

    #[test]
    fn a_dry_run_has_no_end_message() {
        let mut b = Batch::new(1);
        b.begin(DELTABLE, 0, Family::Inet, "delete".into());
        b.end();
        let tx = b.finish(false);
        assert_eq!(tx.datagram.len(), 40);
        assert_eq!(u16_at(&tx.datagram, 24), 10 << 8 | DELTABLE);
    }

    #[test]
    fn nested_attributes_carry_the_flag_and_their_whole_length() {
        let mut b = Batch::new(1);
        b.begin(NEWCHAIN, 0, Family::Inet, "chain".into());
        b.open(4);
        b.be32(1, 0);
        b.be32(2, (-300i32) as u32);
        b.close();
        b.end();
        let d = b.finish(true).datagram;
        let a = 20 + 20;
        assert_eq!(u16_at(&d, a), 4 + 8 + 8);
        assert_eq!(u16_at(&d, a + 2), 4 | NLA_F_NESTED);
        assert_eq!(&d[a + 8..a + 12], &[0, 0, 0, 0]);
        assert_eq!(&d[a + 16..a + 20], &(-300i32).to_be_bytes());
    }

    fn error_msg(seq: u32, err: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&err.to_ne_bytes());
        m.extend_from_slice(&[0; 16]); // the request's header
        m
    }

    #[test]
    fn acknowledgements_decode_to_positive_errnos() {
        let mut d = error_msg(7, 0);
        d.extend(error_msg(8, -1));
        let acks = parse_acks(&d).unwrap();
        assert_eq!(
            acks,
            vec![Ack { seq: 7, errno: 0 }, Ack { seq: 8, errno: 1 }]
        );
    }

    #[test]
    fn truncated_answers_are_errors_not_panics() {
        let d = error_msg(7, 0);
        for cut in 16..d.len() {
            let mut t = d[..cut].to_vec();
            // A length beyond the datagram, or an error without its code.
            assert!(parse_acks(&t).is_err(), "cut at {cut}");
            t.truncate(10);
            assert!(parse_acks(&t).unwrap().is_empty());
        }
        let mut zero = d.clone();
        zero[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(parse_acks(&zero).is_err());
    }
}
