//! Sealed server datagrams: whatever `Datagram::decode` accepts as `sealed`
//! is opened (or refused) without panicking; any other text datagram it
//! accepts, sealed with a session's key, opens back to itself with that key
//! and with no other; an end-to-end frame is left as it is.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pigeon_shared::seal::{open, seal, SealError, SessionKey};
use pigeon_shared::{Datagram, SessionToken};

fuzz_target!(|data: &[u8]| {
    let key = SessionKey::from_token(SessionToken(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff));
    let other = SessionKey::from_token(SessionToken(1));
    match Datagram::decode(data) {
        Ok(Datagram::Sealed(sealed)) => {
            let _ = open(&key, &sealed);
        }
        Ok(datagram @ (Datagram::Secure(_) | Datagram::Relayed(_))) => {
            assert!(
                seal(&key, &datagram) == datagram,
                "an end-to-end frame is not sealed"
            );
        }
        Ok(datagram) => {
            let Datagram::Sealed(sealed) = seal(&key, &datagram) else {
                panic!("seal gave no sealed datagram");
            };
            assert_eq!(open(&key, &sealed), Ok(datagram));
            assert_eq!(open(&other, &sealed), Err(SealError::BadMac));
        }
        Err(_) => {}
    }
});
