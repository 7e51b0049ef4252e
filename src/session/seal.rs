//! Authenticated encryption of cookie values.
//!
//! Owns key derivation and the sealed value format; knows nothing about cookie names, chunking or
//! what the payload means. Every secret yields one AES-256-GCM key per purpose through HKDF-SHA256
//! (RFC 5869) with a fixed salt and a purpose-specific `info`, so a value sealed for one purpose can
//! never be opened as another. The key ring holds the current key first and retired keys after it:
//! sealing uses only the current key, opening tries each in turn, which lets an operator rotate the
//! session secret without signing everyone out.
//!
//! Sealed value: `base64url-no-pad(VERSION || nonce(12) || ciphertext || tag(16))`. The nonce is a
//! fresh random 96-bit value drawn by AWS-LC for every seal (`RandomizedNonceKey`), which keeps the
//! key FIPS-compliant and leaves no nonce bookkeeping to us. The base64url text is encoded and
//! decoded with SIMD instructions where the CPU has them (`base64-simd`), since every request with a
//! session cookie decodes one.

use aws_lc_rs::aead::{self, Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::error::Unspecified;
use aws_lc_rs::hkdf;
use base64_simd::URL_SAFE_NO_PAD;

/// Format version, first byte of every sealed value; anything else is refused.
pub(super) const VERSION: u8 = 1;
/// Bytes in front of the ciphertext: the version and the nonce.
const HEADER_LEN: usize = 1 + NONCE_LEN;
const TAG_LEN: usize = aead::MAX_TAG_LEN;
/// A fixed salt is fine for HKDF (RFC 5869 section 3.1); it only separates this use of the
/// secret from any other use an operator might make of it.
const SALT: &[u8] = b"portcullis cookie keys v1";

/// What a key is for: the HKDF `info` (RFC 5869 section 3.2) that separates the keys.
#[derive(Clone, Copy)]
pub(super) enum Purpose {
    Session,
    LoginState,
    /// Sessions kept in a shared store, sealed under their store key.
    Stored,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Self::Session => b"session",
            Self::LoginState => b"login-state",
            Self::Stored => b"stored-session",
        }
    }
}

/// HMAC-SHA256 keys, one per secret (current first), derived by HKDF like the sealing keys: they turn
/// session ids and claims into the names a shared store keeps them under, so no name there is a
/// usable cookie or a readable claim.
pub(super) struct MacRing {
    keys: Vec<aws_lc_rs::hmac::Key>,
}

impl MacRing {
    pub(super) fn derive(current: &[u8], previous: &[Vec<u8>]) -> Result<MacRing, Unspecified> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT);
        let keys = std::iter::once(current)
            .chain(previous.iter().map(Vec::as_slice))
            .map(|secret| {
                let prk = salt.extract(secret);
                let okm = prk.expand(&[b"store-names"], aws_lc_rs::hmac::HMAC_SHA256)?;
                Ok(aws_lc_rs::hmac::Key::from(okm))
            })
            .collect::<Result<_, Unspecified>>()?;
        Ok(MacRing { keys })
    }

    /// The tag of `parts` under each secret, the current one first.
    pub(super) fn tags(&self, parts: &[&[u8]]) -> Vec<[u8; 32]> {
        self.keys
            .iter()
            .map(|key| {
                let mut ctx = aws_lc_rs::hmac::Context::with_key(key);
                for part in parts {
                    // Length-prefixed, so the parts cannot be shifted into each other.
                    ctx.update(&(part.len() as u64).to_le_bytes());
                    ctx.update(part);
                }
                let mut tag = [0u8; 32];
                tag.copy_from_slice(ctx.sign().as_ref());
                tag
            })
            .collect()
    }
}

/// The keys of one purpose: the current one first, then retired ones, only used to open.
pub(super) struct KeyRing {
    keys: Vec<RandomizedNonceKey>,
}

impl KeyRing {
    /// Derive one key ring per purpose, extracting each secret once.
    pub(super) fn derive<const N: usize>(
        current: &[u8],
        previous: &[Vec<u8>],
        purposes: [Purpose; N],
    ) -> Result<[KeyRing; N], Unspecified> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT);
        let mut rings: [KeyRing; N] = std::array::from_fn(|_| KeyRing {
            keys: Vec::with_capacity(1 + previous.len()),
        });
        for secret in std::iter::once(current).chain(previous.iter().map(Vec::as_slice)) {
            let prk = salt.extract(secret);
            for (ring, purpose) in rings.iter_mut().zip(purposes) {
                let mut key = [0u8; 32];
                prk.expand(&[purpose.info()], &AES_256_GCM)?
                    .fill(&mut key)?;
                let sealing = RandomizedNonceKey::new(&AES_256_GCM, &key);
                key.fill(0);
                ring.keys.push(sealing?);
            }
        }
        Ok(rings)
    }

    /// Seal `buf`, which must come from [`plaintext_buffer`] with the plaintext appended, and return
    /// the base64url text. `aad` is authenticated, not encrypted.
    pub(super) fn seal(&self, aad: &[u8], mut buf: Vec<u8>) -> Result<String, Unspecified> {
        let key = self.keys.first().ok_or(Unspecified)?;
        let (header, body) = buf.split_at_mut_checked(HEADER_LEN).ok_or(Unspecified)?;
        let (nonce, tag) = key.seal_in_place_separate_tag(Aad::from(aad), body)?;
        let (version, nonce_out) = header.split_first_mut().ok_or(Unspecified)?;
        *version = VERSION;
        nonce_out.copy_from_slice(nonce.as_ref());
        buf.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode_to_string(&buf))
    }

    /// Open a sealed value, returning the plaintext inside `buf`.
    ///
    /// `decode` appends the raw sealed bytes to the (cleared) buffer and says whether they were
    /// well-formed. It is called once per key tried: AES-GCM leaves the buffer scrambled after a
    /// failed open, and decoding again only on the rare retired-key path keeps the common path free
    /// of a copy.
    pub(super) fn open<'b>(
        &self,
        aad: &[u8],
        buf: &'b mut Vec<u8>,
        mut decode: impl FnMut(&mut Vec<u8>) -> bool,
    ) -> Option<&'b [u8]> {
        let mut opened = None;
        for key in &self.keys {
            buf.clear();
            if !decode(buf) {
                return None;
            }
            let (header, body) = buf.split_at_mut_checked(HEADER_LEN)?;
            let (&version, nonce) = header.split_first()?;
            if version != VERSION || body.len() < TAG_LEN {
                return None;
            }
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(aad), body) {
                opened = Some(plain.len());
                break;
            }
        }
        let len = opened?;
        buf.get(HEADER_LEN..HEADER_LEN + len)
    }
}

/// A buffer with room reserved for the header, ready for the plaintext to be appended.
pub(super) fn plaintext_buffer(capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + capacity + TAG_LEN);
    buf.resize(HEADER_LEN, 0);
    buf
}

/// Append the base64url-decoded `text` to `buf`; false when it is not canonical unpadded base64url:
/// padding, characters outside the URL-safe alphabet, a length of 1 modulo 4, or non-zero bits in
/// the last character beyond the decoded bytes are all refused, so one value has one encoding.
pub(super) fn decode_into(text: &[u8], buf: &mut Vec<u8>) -> bool {
    URL_SAFE_NO_PAD.decode_append(text, buf).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use proptest::prelude::*;

    fn rings(current: &[u8], previous: &[Vec<u8>]) -> [KeyRing; 2] {
        KeyRing::derive(current, previous, [Purpose::Session, Purpose::LoginState]).unwrap()
    }

    fn seal(ring: &KeyRing, aad: &[u8], plain: &[u8]) -> String {
        let mut buf = plaintext_buffer(plain.len());
        buf.extend_from_slice(plain);
        ring.seal(aad, buf).unwrap()
    }

    fn open(ring: &KeyRing, aad: &[u8], text: &str) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        ring.open(aad, &mut buf, |b| decode_into(text.as_bytes(), b))
            .map(<[u8]>::to_vec)
    }

    #[test]
    fn seal_open_round_trip_and_fresh_nonces() {
        let [session, _] = rings(&[7; 32], &[]);
        let a = seal(&session, b"n", b"hello");
        let b = seal(&session, b"n", b"hello");
        assert_ne!(a, b, "each seal must draw a fresh nonce");
        assert_eq!(open(&session, b"n", &a).as_deref(), Some(&b"hello"[..]));
        assert_eq!(open(&session, b"other", &a), None, "aad is bound");
    }

    #[test]
    fn purposes_have_distinct_keys() {
        let [session, login] = rings(&[7; 32], &[]);
        let sealed = seal(&login, b"n", b"x");
        assert_eq!(open(&session, b"n", &sealed), None);
        assert!(open(&login, b"n", &sealed).is_some());
    }

    #[test]
    fn retired_keys_open_but_never_seal() {
        let [old, _] = rings(&[1; 32], &[]);
        let [rotated, _] = rings(&[2; 32], &[vec![1; 32]]);
        let [fresh, _] = rings(&[2; 32], &[]);
        let sealed = seal(&old, b"n", b"payload");
        assert_eq!(
            open(&rotated, b"n", &sealed).as_deref(),
            Some(&b"payload"[..])
        );
        assert_eq!(open(&fresh, b"n", &sealed), None);
        assert_eq!(open(&old, b"n", &seal(&rotated, b"n", b"p")), None);
    }

    #[test]
    fn wrong_version_and_short_values_are_refused() {
        let [ring, _] = rings(&[3; 32], &[]);
        let sealed = seal(&ring, b"", b"abc");
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        raw[0] = 2;
        assert_eq!(open(&ring, b"", &URL_SAFE_NO_PAD.encode(&raw)), None);
        for cut in 0..sealed.len() {
            assert_eq!(open(&ring, b"", &sealed[..cut]), None);
        }
    }

    /// Text around the edges of base64url: the alphabet, padding, the standard alphabet's `+` and
    /// `/`, whitespace and bytes beyond ASCII.
    fn arb_text() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            8 => prop::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()
            ),
            1 => prop::sample::select(b"=+/ .\n\0".to_vec()),
            1 => any::<u8>(),
        ];
        prop::collection::vec(byte, 0..200)
    }

    #[test]
    fn decode_refuses_padding_foreign_characters_and_trailing_bits() {
        let mut buf = Vec::new();
        // "AQ" is the canonical encoding of [0x01]; "AR" and "AV" carry the same byte with non-zero
        // trailing bits, as "AQB" carries [0x01, 0x00] (canonical "AQA").
        assert!(decode_into(b"AQ", &mut buf));
        assert_eq!(buf, [1]);
        for bad in [
            &b"AR"[..],
            b"AV",
            b"AQB",
            b"AQ==",
            b"AQ=",
            b"A",
            b"A+8/",
            b"AQ\n",
            b" AQ",
        ] {
            buf.clear();
            assert!(!decode_into(bad, &mut buf), "{bad:?}");
        }
        // The same rules hold inside long values, which take the vectorised path.
        let long = URL_SAFE_NO_PAD.encode([0xA5; 100]);
        buf.clear();
        assert!(decode_into(long.as_bytes(), &mut buf));
        assert_eq!(buf, [0xA5; 100]);
        for (pos, junk) in [(0, b'='), (10, b'+'), (40, b'/'), (70, b'.'), (100, b'=')] {
            let mut bad = long.clone().into_bytes();
            bad[pos] = junk;
            buf.clear();
            assert!(!decode_into(&bad, &mut buf), "{junk} at {pos}");
        }
    }

    proptest! {
        /// The sealed-value decoder accepts exactly what the `base64` crate's strict URL_SAFE_NO_PAD
        /// engine accepts, with the same bytes.
        #[test]
        fn decode_agrees_with_the_strict_reference(text in arb_text(), prefix in 0..3usize) {
            let mut buf = vec![7; prefix];
            let ok = decode_into(&text, &mut buf);
            let reference = URL_SAFE_NO_PAD.decode(&text);
            prop_assert_eq!(ok, reference.is_ok());
            if let Ok(bytes) = reference {
                prop_assert_eq!(buf.get(..prefix), Some(&vec![7; prefix][..]));
                prop_assert_eq!(buf.get(prefix..), Some(&bytes[..]));
            }
        }

        /// Sealing round-trips, and flipping any one bit of the sealed bytes (version, nonce,
        /// ciphertext or tag), or opening under another name, reads as nothing.
        #[test]
        fn seal_open_round_trips_and_any_flipped_bit_fails(
            plain in prop::collection::vec(any::<u8>(), 0..300),
            aad in prop::collection::vec(any::<u8>(), 0..24),
            bit in any::<prop::sample::Index>(),
        ) {
            let [ring, _] = rings(&[9; 32], &[]);
            let sealed = seal(&ring, &aad, &plain);
            prop_assert_eq!(open(&ring, &aad, &sealed), Some(plain.clone()));
            let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
            let at = bit.index(raw.len() * 8);
            raw[at / 8] ^= 1 << (at % 8);
            prop_assert_eq!(open(&ring, &aad, &URL_SAFE_NO_PAD.encode(&raw)), None);
            let mut other = aad.clone();
            other.push(0);
            prop_assert_eq!(open(&ring, &other, &sealed), None);
        }

        #[test]
        fn encode_decode_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let text = URL_SAFE_NO_PAD.encode(&bytes);
            let mut buf = Vec::new();
            prop_assert!(decode_into(text.as_bytes(), &mut buf));
            prop_assert_eq!(buf, bytes);
        }
    }
}
