//! Load split between the live servers of a cluster sharing the pools, like
//! Kea's HA load balancing (RFC 3074): each client is owned by one live
//! server, by rendezvous hashing of its identity (option 61, else chaddr),
//! and only that server answers its DISCOVERs and broadcast REQUESTs, so each
//! exchange is handled once. When a server leaves the live set (its
//! heartbeat stops), its clients spread over the survivors; the others' stay.
//!
//! The hash is stable across processes and builds (no seeded hasher), so
//! every server computes the same owner from the same live set.

use uuid::Uuid;

use crate::engine::ClientKey;

/// The live servers sharing the pools, as this server's cluster membership
/// sees them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Peers {
    /// This server's member id.
    pub me: Uuid,
    /// The live members' ids; empty when this server cannot tell (its own
    /// heartbeat is not being recorded).
    pub live: Vec<Uuid>,
}

impl Peers {
    /// True when this server answers `client`: it is the client's owner,
    /// or it is not a live member of a cluster (alone, or unable to tell:
    /// then it answers everything, as a single server does, and the store's
    /// claims still keep addresses apart).
    pub fn answers(&self, client: &ClientKey) -> bool {
        if !self.live.contains(&self.me) {
            return true;
        }
        owner(client, &self.live) == Some(self.me)
    }
}

/// The live member that owns `client`: the highest rendezvous score (ties:
/// the larger id).
pub fn owner(client: &ClientKey, live: &[Uuid]) -> Option<Uuid> {
    let h = client_hash(client);
    live.iter().copied().max_by_key(|&m| (score(m, h), m))
}

/// FNV-1a over the identity, tagged by kind (a client id and a MAC with the
/// same bytes are different clients).
fn client_hash(client: &ClientKey) -> u64 {
    let (tag, bytes): (u8, &[u8]) = match client {
        ClientKey::Id(id) => (1, id),
        ClientKey::Mac(mac) => (2, &mac.0),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in std::iter::once(&tag).chain(bytes) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser: well mixed, and the same everywhere.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn score(member: Uuid, client: u64) -> u64 {
    let (hi, lo) = member.as_u64_pair();
    mix(mix(client ^ lo) ^ hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackboot_core::MacAddr;

    fn client(i: u32) -> ClientKey {
        let b = i.to_be_bytes();
        ClientKey::Mac(MacAddr([2, 0, b[0], b[1], b[2], b[3]]))
    }

    #[test]
    fn two_servers_split_clients_and_a_survivor_takes_all() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let both = vec![a, b];
        let pa = Peers {
            me: a,
            live: both.clone(),
        };
        let pb = Peers {
            me: b,
            live: both.clone(),
        };
        let mut by_a = 0;
        for i in 0..1000 {
            let c = client(i);
            // Exactly one of the two answers each client.
            assert_ne!(pa.answers(&c), pb.answers(&c), "client {i}");
            by_a += u32::from(pa.answers(&c));
        }
        assert!((350..=650).contains(&by_a), "a owns {by_a} of 1000");
        // a stops: b owns everyone; a's clients only moved.
        let alone = Peers {
            me: b,
            live: vec![b],
        };
        assert!((0..1000).all(|i| alone.answers(&client(i))));
        // A third server takes about a third, only from the other two.
        let c3 = Uuid::new_v4();
        let three = vec![a, b, c3];
        let mut moved_between_a_and_b = 0;
        let mut to_c3 = 0;
        for i in 0..1000 {
            let (two, now) = (owner(&client(i), &both), owner(&client(i), &three));
            if now == Some(c3) {
                to_c3 += 1;
            } else if now != two {
                moved_between_a_and_b += 1;
            }
        }
        assert_eq!(moved_between_a_and_b, 0);
        assert!((200..=470).contains(&to_c3), "{to_c3}");
    }

    #[test]
    fn outside_a_live_cluster_everything_is_answered() {
        let me = Uuid::new_v4();
        let other = Uuid::new_v4();
        for peers in [
            Peers::default(),
            Peers { me, live: vec![] },
            // This server's heartbeat lapsed: the others still list it
            // or not; it answers as a single server until it is back.
            Peers {
                me,
                live: vec![other],
            },
        ] {
            assert!((0..100).all(|i| peers.answers(&client(i))), "{peers:?}");
        }
    }

    #[test]
    fn a_client_id_and_a_mac_hash_apart_and_stably() {
        let mac = MacAddr([2, 0, 0, 0, 0, 7]);
        let by_mac = client_hash(&ClientKey::Mac(mac));
        let by_id = client_hash(&ClientKey::Id(mac.octets().to_vec()));
        assert_ne!(by_mac, by_id);
        // A fixed value (FNV-1a of 02 02:00:00:00:00:07): every server and
        // build must agree, so no per-process seed.
        assert_eq!(by_mac, 0xbb5cd68f361297b6);
        let fixed = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(
            owner(&ClientKey::Id(vec![1, 2, 3]), &[fixed, Uuid::nil()]),
            owner(&ClientKey::Id(vec![1, 2, 3]), &[Uuid::nil(), fixed])
        );
    }
}
