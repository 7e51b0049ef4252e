//! A session's identity claims, kept the way the session cookie stores them.
//!
//! The claims travel as two sections of the session plaintext (see `payload`): their strings, one
//! after another, and a short structure of tags, counts and lengths that cuts them. [`Claims`] keeps
//! exactly those two sections. Opening a session checks them in one walk and copies them, with no
//! JSON map built and no string allocated per claim; the gateway then looks up only the claims its
//! identity headers name, once per session. A map is built only where one is asked for
//! (`/oauth2/userinfo`, `Debug`).
//!
//! The structure: the claims object is its entries without a tag: their count, then each entry: the
//! name's length, then the value. A value is a tag byte, then:
//!
//! | tag | value | followed by |
//! | --- | --- | --- |
//! | 0, 1, 2 | `null`, `false`, `true` | nothing |
//! | 3 | number, non-negative integer | `u64`, little-endian |
//! | 4 | number, negative integer | `i64`, little-endian |
//! | 5 | number, finite float | `f64`, little-endian |
//! | 6 | string | its length (the bytes come from the text) |
//! | 7 | array | item count, then the items |
//! | 8 | object | entry count, then each entry: the name's length, then the value |
//!
//! Lengths and counts are LEB128 (at most 5 bytes, up to `u32::MAX`). Containers nest at most
//! [`MAX_DEPTH`] deep, the claims object included, as deep as `serde_json` parses.
//!
//! [`Claims::read`] trusts no length or count: every read is checked against what is left, and
//! sections with bytes left over, an unknown tag, a string cut inside a character, a duplicate name
//! in one object or a non-finite float are refused. A [`Claims`] value is therefore always well
//! formed, and the lookups, though still checked, never meet a malformed structure.

use std::fmt;

use serde_json::{Map, Number, Value};

use super::{SessionError, CHUNK_LEN, MAX_CHUNKS};

/// Deepest nesting of claim containers, counting the claims object: as deep as `serde_json` parses,
/// so any claims that came from a provider's JSON can be stored.
pub(super) const MAX_DEPTH: usize = 127;
const TOO_DEEP: SessionError = SessionError::Claims("containers nested more than 127 deep");
/// Names of one object compared pairwise up to this many; a larger object's names are sorted.
const PAIRWISE_NAMES: usize = 16;

pub(super) const NULL: u8 = 0;
pub(super) const FALSE: u8 = 1;
pub(super) const TRUE: u8 = 2;
pub(super) const UINT: u8 = 3;
pub(super) const NEG_INT: u8 = 4;
pub(super) const FLOAT: u8 = 5;
pub(super) const STRING: u8 = 6;
pub(super) const ARRAY: u8 = 7;
pub(super) const OBJECT: u8 = 8;

/// The identity claims of a session (`sub`, `email`, `groups`, ...), in their stored form.
#[derive(Clone, PartialEq, Eq)]
pub struct Claims {
    /// The strings, in the order the structure names them.
    text: Box<str>,
    /// The structure: the entry count, then the entries.
    code: Box<[u8]>,
}

impl Claims {
    /// Claims holding `map`. Fails when a container nests deeper than [`MAX_DEPTH`] or a number
    /// cannot be stored (only possible with `serde_json`'s arbitrary precision).
    pub fn new(map: &Map<String, Value>) -> Result<Claims, SessionError> {
        let mut out = Writer::default();
        out.entries(map, MAX_DEPTH)?;
        Ok(Claims {
            text: out.text.into_boxed_str(),
            code: out.code.into_boxed_slice(),
        })
    }

    /// The claims made of all of `input`'s sections, checked (see the module header); `None` when
    /// they are malformed or anything is left over.
    pub(super) fn read(input: Reader<'_>) -> Option<Claims> {
        let mut walk = input;
        walk.entries(MAX_DEPTH)?;
        if !walk.text.is_empty() || !walk.code.is_empty() {
            return None;
        }
        Some(Claims {
            text: input.text.into(),
            code: input.code.into(),
        })
    }

    /// The two sections, as [`Claims::read`] takes them back.
    pub(super) fn sections(&self) -> (&str, &[u8]) {
        (&self.text, &self.code)
    }

    /// The claims' entries, in stored order (`serde_json`'s map order: sorted by name).
    pub fn iter(&self) -> Entries<'_> {
        let mut reader = Reader {
            text: &self.text,
            code: &self.code,
        };
        let left = reader.len().unwrap_or(0);
        Entries {
            reader,
            left,
            depth: MAX_DEPTH - 1,
        }
    }

    /// The claim called `name`.
    pub fn get(&self, name: &str) -> Option<Claim<'_>> {
        self.iter().get(name)
    }

    /// A claim by name, or by a dotted path into nested objects (`realm_access.roles`) when no claim
    /// has the whole name.
    pub fn lookup(&self, path: &str) -> Option<Claim<'_>> {
        if let Some(claim) = self.get(path) {
            return Some(claim);
        }
        let mut parts = path.split('.');
        let mut current = self.get(parts.next()?)?;
        for part in parts {
            match current {
                Claim::Object(entries) => current = entries.get(part)?,
                _ => return None,
            }
        }
        Some(current)
    }

    /// The claims as a JSON object.
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(name, claim)| (name.to_owned(), claim.to_value()))
            .collect()
    }
}

impl Default for Claims {
    /// No claims.
    fn default() -> Claims {
        Claims {
            text: Box::default(),
            code: Box::new([0]),
        }
    }
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(name, claim)| (name, claim.to_value())))
            .finish()
    }
}

/// One claim value, borrowed from [`Claims`].
#[derive(Clone, Debug)]
pub enum Claim<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(&'a str),
    Array(Items<'a>),
    Object(Entries<'a>),
}

impl<'a> Claim<'a> {
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Claim::String(s) => Some(s),
            _ => None,
        }
    }

    /// The claim as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            Claim::Null => Value::Null,
            Claim::Bool(b) => Value::Bool(*b),
            Claim::Number(n) => Value::Number(n.clone()),
            Claim::String(s) => Value::String((*s).to_owned()),
            Claim::Array(items) => Value::Array(items.clone().map(|c| c.to_value()).collect()),
            Claim::Object(entries) => Value::Object(
                entries
                    .clone()
                    .map(|(name, claim)| (name.to_owned(), claim.to_value()))
                    .collect(),
            ),
        }
    }
}

/// The items of an array claim.
#[derive(Clone, Debug)]
pub struct Items<'a> {
    reader: Reader<'a>,
    left: usize,
    /// Containers still allowed inside an item.
    depth: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = Claim<'a>;

    fn next(&mut self) -> Option<Claim<'a>> {
        self.left = self.left.checked_sub(1)?;
        self.reader.claim(self.depth)
    }
}

/// The entries of an object claim (or of the claims themselves): names and values.
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    reader: Reader<'a>,
    left: usize,
    /// Containers still allowed inside a value.
    depth: usize,
}

impl<'a> Entries<'a> {
    /// The value of the entry called `name`.
    pub fn get(mut self, name: &str) -> Option<Claim<'a>> {
        while let Some(left) = self.left.checked_sub(1) {
            self.left = left;
            if self.reader.string()? == name {
                return self.reader.claim(self.depth);
            }
            self.reader.skip(self.depth)?;
        }
        None
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a str, Claim<'a>);

    fn next(&mut self) -> Option<(&'a str, Claim<'a>)> {
        self.left = self.left.checked_sub(1)?;
        let name = self.reader.string()?;
        Some((name, self.reader.claim(self.depth)?))
    }
}

/// The two sections being written: strings into `text`, everything else into `code`.
#[derive(Default)]
pub(super) struct Writer {
    pub(super) text: String,
    pub(super) code: Vec<u8>,
}

pub(super) fn too_large(needed: usize) -> SessionError {
    SessionError::TooLarge {
        needed,
        max: MAX_CHUNKS * CHUNK_LEN,
    }
}

impl Writer {
    pub(super) fn len(&mut self, len: usize) -> Result<(), SessionError> {
        let mut n = u32::try_from(len).map_err(|_| too_large(len))?;
        while n >= 0x80 {
            // The low seven bits, with the continuation bit set.
            self.code.push((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        self.code.push(n as u8);
        Ok(())
    }

    pub(super) fn string(&mut self, s: &str) -> Result<(), SessionError> {
        self.len(s.len())?;
        self.text.push_str(s);
        Ok(())
    }

    /// An object's entries; `depth` counts the containers still allowed, this one included.
    fn entries(&mut self, map: &Map<String, Value>, depth: usize) -> Result<(), SessionError> {
        let inner = depth.checked_sub(1).ok_or(TOO_DEEP)?;
        self.len(map.len())?;
        for (name, value) in map {
            self.string(name)?;
            self.value(value, inner)?;
        }
        Ok(())
    }

    fn value(&mut self, value: &Value, depth: usize) -> Result<(), SessionError> {
        match value {
            Value::Null => self.code.push(NULL),
            Value::Bool(false) => self.code.push(FALSE),
            Value::Bool(true) => self.code.push(TRUE),
            Value::Number(n) => {
                let (tag, bytes) = match (n.as_u64(), n.as_i64(), n.as_f64()) {
                    (Some(u), _, _) => (UINT, u.to_le_bytes()),
                    (None, Some(i), _) => (NEG_INT, i.to_le_bytes()),
                    (None, None, Some(f)) => (FLOAT, f.to_le_bytes()),
                    (None, None, None) => {
                        return Err(SessionError::Claims("a number out of range"))
                    }
                };
                self.code.push(tag);
                self.code.extend_from_slice(&bytes);
            }
            Value::String(s) => {
                self.code.push(STRING);
                self.string(s)?;
            }
            Value::Array(items) => {
                let inner = depth.checked_sub(1).ok_or(TOO_DEEP)?;
                self.code.push(ARRAY);
                self.len(items.len())?;
                for item in items {
                    self.value(item, inner)?;
                }
            }
            Value::Object(map) => {
                self.code.push(OBJECT);
                self.entries(map, depth)?;
            }
        }
        Ok(())
    }
}

/// The two sections being read, each consumed from the front.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reader<'a> {
    pub(super) text: &'a str,
    pub(super) code: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.code.split_first()?;
        self.code = rest;
        Some(b)
    }

    fn eight(&mut self) -> Option<[u8; 8]> {
        let (bytes, rest) = self.code.split_first_chunk()?;
        self.code = rest;
        Some(*bytes)
    }

    /// A LEB128 length: at most five bytes, at most `u32::MAX`.
    pub(super) fn len(&mut self) -> Option<usize> {
        let mut n: u64 = 0;
        for shift in [0, 7, 14, 21, 28] {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return usize::try_from(u32::try_from(n).ok()?).ok();
            }
        }
        None
    }

    /// The next string of the text; `None` when it would end past the text or inside a character.
    pub(super) fn string(&mut self) -> Option<&'a str> {
        let len = self.len()?;
        let s = self.text.get(..len)?;
        self.text = self.text.get(len..)?;
        Some(s)
    }

    /// Check an object's entries and move past them; `depth` counts the containers still allowed,
    /// this one included.
    fn entries(&mut self, depth: usize) -> Option<()> {
        let inner = depth.checked_sub(1)?;
        let count = self.len()?;
        let mut first = [""; PAIRWISE_NAMES];
        let mut all = Vec::new();
        for i in 0..count {
            let name = self.string()?;
            if i < PAIRWISE_NAMES {
                if first[..i].contains(&name) {
                    return None;
                }
                first[i] = name;
            } else {
                if all.is_empty() {
                    // Every entry takes at least two bytes, so the count cannot outgrow the input.
                    all.reserve(count.min(self.code.len() + PAIRWISE_NAMES));
                    all.extend_from_slice(&first);
                }
                all.push(name);
            }
            self.value(inner)?;
        }
        all.sort_unstable();
        all.windows(2).all(|w| w[0] != w[1]).then_some(())
    }

    /// Check one value and move past it.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.byte()? {
            NULL | FALSE | TRUE => {}
            UINT => {
                self.eight()?;
            }
            NEG_INT => {
                if i64::from_le_bytes(self.eight()?) >= 0 {
                    return None;
                }
            }
            FLOAT => {
                if !f64::from_le_bytes(self.eight()?).is_finite() {
                    return None;
                }
            }
            STRING => {
                self.string()?;
            }
            ARRAY => {
                let inner = depth.checked_sub(1)?;
                for _ in 0..self.len()? {
                    self.value(inner)?;
                }
            }
            OBJECT => self.entries(depth)?,
            _ => return None,
        }
        Some(())
    }

    /// Move past one value of claims already checked by [`Claims::read`] (or written by
    /// [`Claims::new`]): the same walk as [`Reader::value`] without its checks.
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.byte()? {
            NULL | FALSE | TRUE => {}
            UINT | NEG_INT | FLOAT => {
                self.eight()?;
            }
            STRING => {
                self.string()?;
            }
            ARRAY => {
                let inner = depth.checked_sub(1)?;
                for _ in 0..self.len()? {
                    self.skip(inner)?;
                }
            }
            OBJECT => {
                let inner = depth.checked_sub(1)?;
                for _ in 0..self.len()? {
                    self.string()?;
                    self.skip(inner)?;
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// The next value, moving past it (a container's contents included).
    fn claim(&mut self, depth: usize) -> Option<Claim<'a>> {
        let start = *self;
        let tag = self.byte()?;
        Some(match tag {
            NULL => Claim::Null,
            FALSE => Claim::Bool(false),
            TRUE => Claim::Bool(true),
            UINT => Claim::Number(u64::from_le_bytes(self.eight()?).into()),
            NEG_INT => Claim::Number(i64::from_le_bytes(self.eight()?).into()),
            FLOAT => Claim::Number(Number::from_f64(f64::from_le_bytes(self.eight()?))?),
            STRING => Claim::String(self.string()?),
            ARRAY | OBJECT => {
                // Read the count from where the container starts, then skip over it as a whole.
                let mut contents = start;
                contents.byte()?;
                let left = contents.len()?;
                let inner = depth.checked_sub(1)?;
                *self = start;
                self.skip(depth)?;
                if tag == ARRAY {
                    Claim::Array(Items {
                        reader: contents,
                        left,
                        depth: inner,
                    })
                } else {
                    Claim::Object(Entries {
                        reader: contents,
                        left,
                        depth: inner,
                    })
                }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        Claims::new(value.as_object().unwrap()).unwrap()
    }

    fn read(text: &str, code: &[u8]) -> Option<Claims> {
        Claims::read(Reader { text, code })
    }

    #[test]
    fn claims_round_trip_through_their_sections() {
        let value = json!({
            "sub": "u1",
            "groups": ["a", "b", {"c": [1, -2, 0.5, null, true, false]}],
            "empty": {},
            "name": "Jos\u{e9}",
        });
        let c = claims(value.clone());
        let (text, code) = c.sections();
        let back = read(text, code).unwrap();
        assert_eq!(back, c);
        assert_eq!(Value::Object(back.to_map()), value);
        assert_eq!(
            format!("{back:?}"),
            format!("{:?}", value.as_object().unwrap())
        );
        assert_eq!(Claims::default().to_map(), Map::new());
        assert_eq!(read("", &[0]), Some(Claims::default()));
    }

    #[test]
    fn lookups_find_names_and_dotted_paths() {
        let c = claims(json!({
            "a": {"b": {"c": "deep"}, "list": [1, 2]},
            "a.b": "whole name wins",
            "n": 42,
            "z": "last",
        }));
        assert_eq!(c.get("z").and_then(|v| v.as_str()), Some("last"));
        assert_eq!(c.get("n").map(|v| v.to_value()), Some(json!(42)));
        assert_eq!(
            c.lookup("a.b").and_then(|v| v.as_str()),
            Some("whole name wins")
        );
        // A path walks objects from the first name, whatever names hold dots.
        assert_eq!(c.lookup("a.b.c").and_then(|v| v.as_str()), Some("deep"));
        assert!(c.lookup("a.b.x").is_none());
        assert_eq!(
            c.lookup("a.list").map(|v| v.to_value()),
            Some(json!([1, 2]))
        );
        assert!(c.lookup("a.list.0").is_none());
        assert!(c.lookup("missing").is_none());
        assert!(c.lookup("n.x").is_none());
        let Some(Claim::Object(a)) = c.get("a") else {
            panic!("an object");
        };
        assert_eq!(a.get("b").map(|v| v.to_value()), Some(json!({"c": "deep"})));
    }

    #[test]
    fn duplicate_names_are_refused_in_small_and_large_objects() {
        // Entries with one-letter names and null values.
        let object = |names: &[&str]| {
            let text: String = names.concat();
            let mut code = vec![u8::try_from(names.len()).unwrap()];
            for n in names {
                code.extend_from_slice(&[u8::try_from(n.len()).unwrap(), NULL]);
            }
            (text, code)
        };
        let letters: Vec<String> = (b'a'..=b'z').map(|b| char::from(b).to_string()).collect();
        let letters: Vec<&str> = letters.iter().map(String::as_str).collect();
        for n in [2, PAIRWISE_NAMES, PAIRWISE_NAMES + 1, 26] {
            let names = &letters[..n];
            let (text, code) = object(names);
            assert!(read(&text, &code).is_some(), "{n} distinct names");
            // The last name repeats the first, then one in the middle repeats its neighbour.
            let mut dup = names.to_vec();
            dup[n - 1] = names[0];
            let (text, code) = object(&dup);
            assert_eq!(read(&text, &code), None, "{n} names, first repeated last");
            let mut dup = names.to_vec();
            dup[n / 2] = names[n / 2 - 1];
            let (text, code) = object(&dup);
            assert_eq!(read(&text, &code), None, "{n} names, neighbours equal");
        }
    }

    #[test]
    fn numbers_keep_their_kind() {
        let c = claims(json!({"u": u64::MAX, "i": i64::MIN, "f": 1.5e300}));
        assert_eq!(c.get("u").map(|v| v.to_value()), Some(json!(u64::MAX)));
        assert_eq!(c.get("i").map(|v| v.to_value()), Some(json!(i64::MIN)));
        assert_eq!(c.get("f").map(|v| v.to_value()), Some(json!(1.5e300)));
    }
}
