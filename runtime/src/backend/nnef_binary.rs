//! A binary form of tract's NNEF document (`graph.nnef`), so that loading a
//! pre-optimised model does not run tract's text parser.
//!
//! tract 0.23 parses `graph.nnef` at about 3 MB/s (25 µs a statement): 19–23 ms
//! of a 40–60 ms load on the PP-OCR models, more than the rest of reading the
//! artifact. The trainer therefore also writes the parsed document in this form
//! (`outpost.graph.bin` inside the NNEF archive, beside `graph.nnef`, which stays
//! the reference and what tract's own tools read), and the runtime decodes it in
//! well under a millisecond.
//!
//! The encoding is a plain pre-order walk of tract's AST (`tract_nnef::ast`):
//! each enum is a one-byte tag, each length an LEB128 varint, each string its
//! UTF-8 bytes. Decoding checks every length against the bytes left and limits
//! nesting, so a damaged file is an error, never a panic or a huge allocation.

use tract_nnef::ast::{
    Argument, Assignment, Comprehension, Document, FragmentDecl, FragmentDef, GraphDef, Identifier,
    IfThenElse, Invocation, LValue, Literal, Parameter, RValue, Result_, Subscript, TypeName,
    TypeSpec,
};

/// The first bytes of an encoded document; the last is the format version.
const MAGIC: &[u8; 5] = b"OPNB\x01";

/// Deeper nesting than this (arrays of arrays, nested expressions) is refused.
const MAX_DEPTH: usize = 64;

/// Why an encoded document could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes do not start with this format's magic and version.
    #[error("not an Outpost binary NNEF document (or an unsupported version)")]
    Magic,
    /// The bytes end inside a value.
    #[error("the binary NNEF document is truncated")]
    Truncated,
    /// A tag, string or length that this format never writes.
    #[error("the binary NNEF document is malformed: {0}")]
    Malformed(&'static str),
}

/// Encodes `doc`; [`decode`] gives it back equal.
pub fn encode(doc: &Document) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    doc.encode(&mut out);
    out
}

/// Decodes bytes made by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Document, DecodeError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(DecodeError::Magic)?;
    let mut reader = Reader {
        bytes: rest,
        depth: 0,
    };
    let doc = Document::decode(&mut reader)?;
    if !reader.bytes.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    Ok(doc)
}

/// The decoder's position in the input.
struct Reader<'a> {
    bytes: &'a [u8],
    depth: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.bytes.split_first().ok_or(DecodeError::Truncated)?;
        self.bytes = rest;
        Ok(b)
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                // Every item takes at least one byte: a longer count is damage.
                return usize::try_from(value)
                    .ok()
                    .filter(|&n| n <= self.bytes.len())
                    .ok_or(DecodeError::Truncated);
            }
        }
        Err(DecodeError::Malformed("length varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// Runs `f` one nesting level deeper.
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        if self.depth >= MAX_DEPTH {
            return Err(DecodeError::Malformed("nested too deeply"));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// One AST type's encoding.
trait Codec: Sized {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(r: &mut Reader) -> Result<Self, DecodeError>;
}

impl Codec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        put_len(out, self.len());
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let n = r.len()?;
        let bytes = r.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Malformed("invalid UTF-8"))
    }
}

impl Codec for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed("boolean")),
        }
    }
}

impl<T: Codec> Codec for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_len(out, self.len());
        for item in self {
            item.encode(out);
        }
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let n = r.len()?;
        r.nested(|r| (0..n).map(|_| T::decode(r)).collect())
    }
}

impl<T: Codec> Codec for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.byte()? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(r)?)),
            _ => Err(DecodeError::Malformed("option tag")),
        }
    }
}

impl<T: Codec> Codec for Box<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out)
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        r.nested(|r| T::decode(r).map(Box::new))
    }
}

impl<A: Codec, B: Codec> Codec for (A, B) {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok((A::decode(r)?, B::decode(r)?))
    }
}

impl Codec for Identifier {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out)
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        String::decode(r).map(Identifier)
    }
}

/// Structs: their fields in declaration order.
macro_rules! struct_codec {
    ($ty:ident { $($field:ident),* }) => {
        impl Codec for $ty {
            fn encode(&self, out: &mut Vec<u8>) {
                $(self.$field.encode(out);)*
            }
            fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
                Ok($ty { $($field: Codec::decode(r)?),* })
            }
        }
    };
}

struct_codec!(Document {
    version,
    extension,
    fragments,
    graph_def
});
struct_codec!(GraphDef {
    id,
    parameters,
    results,
    body
});
struct_codec!(FragmentDef { decl, body });
struct_codec!(FragmentDecl {
    id,
    generic_decl,
    parameters,
    results
});
struct_codec!(Parameter { id, spec, lit, doc });
struct_codec!(Result_ { id, spec });
struct_codec!(Assignment { left, right });
struct_codec!(Invocation {
    id,
    generic_type_name,
    arguments
});
struct_codec!(Argument { id, rvalue });
struct_codec!(Comprehension {
    loop_iters,
    filter,
    yields
});
struct_codec!(IfThenElse {
    cond,
    then,
    otherwise
});

impl Codec for TypeName {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self {
            TypeName::Integer => 0,
            TypeName::Scalar => 1,
            TypeName::Logical => 2,
            TypeName::String => 3,
            TypeName::Any => 4,
        })
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(match r.byte()? {
            0 => TypeName::Integer,
            1 => TypeName::Scalar,
            2 => TypeName::Logical,
            3 => TypeName::String,
            4 => TypeName::Any,
            _ => return Err(DecodeError::Malformed("type name tag")),
        })
    }
}

/// Enums of tuple variants: a tag byte, then the variant's fields in order.
/// (Recursion goes through `Vec` and `Box`, which count the nesting depth.)
macro_rules! enum_codec {
    ($ty:ident, $what:literal { $($tag:literal => $variant:ident($($field:ident),+)),+ $(,)? }) => {
        impl Codec for $ty {
            fn encode(&self, out: &mut Vec<u8>) {
                match self {
                    $($ty::$variant($($field),+) => {
                        out.push($tag);
                        $($field.encode(out);)+
                    })+
                }
            }
            fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
                Ok(match r.byte()? {
                    $($tag => $ty::$variant($({
                        let _ = stringify!($field);
                        Codec::decode(r)?
                    }),+),)+
                    _ => return Err(DecodeError::Malformed($what)),
                })
            }
        }
    };
}

enum_codec!(TypeSpec, "type spec tag" {
    0 => Single(t),
    1 => Tensor(t),
    2 => Array(inner),
    3 => Tuple(items),
});
enum_codec!(LValue, "lvalue tag" {
    0 => Identifier(id),
    1 => Array(items),
    2 => Tuple(items),
});
enum_codec!(Literal, "literal tag" {
    0 => Numeric(s),
    1 => String(s),
    2 => Logical(b),
    3 => Array(items),
    4 => Tuple(items),
});
enum_codec!(Subscript, "subscript tag" {
    0 => Single(v),
    1 => Range(from, to),
});
enum_codec!(RValue, "rvalue tag" {
    0 => Identifier(id),
    1 => Literal(lit),
    2 => Binary(a, op, b),
    3 => Unary(op, a),
    4 => Tuple(items),
    5 => Array(items),
    6 => Subscript(a, s),
    7 => Comprehension(c),
    8 => IfThenElse(c),
    9 => Invocation(inv),
});

#[cfg(test)]
mod tests {
    use super::*;
    use tract_nnef::ast::parse::parse_document;

    /// A document using every construct of the grammar that tract parses.
    const EVERYTHING: &str = r#"
version 1.0;
extension tract_registry tract_core;

fragment f<? = scalar>(x: tensor<?>, n: integer = 2, s: string = "ab", flags: logical[] = [true, false], t: (integer, scalar) = (1, 2.5))
  -> (y: tensor<?>, z: tensor<scalar>[])
{
  a = x[1:n];
  b = x[:];
  c = [for i in range_of(x), j in [1, 2] yield i * j];
  y = -x if n > 1 && true else !x;
  z = [y, a[0], (b, c)];
}

graph network(input) -> (i"out.0", other) {
  input = external(shape = [1, 3, 4, 4]);
  i"w.kernel" = variable<scalar>(label = "w.kernel", shape = [8, 3, 1, 1]);
  c = [[[[0.5]]], [[[-1.25e-3]]]];
  i"out.0" = conv(input, i"w.kernel", 0.0, dilation = [1, 1], stride = [1, 1], border = "constant", groups = 1, padding = [(0, 0), (0, 0)]);
  other, third = split(i"out.0", axis = 1, ratios = [1, 1]);
}
"#;

    #[test]
    fn every_construct_round_trips() {
        let mut doc = parse_document(EVERYTHING).unwrap();
        let bytes = encode(&doc);
        assert_eq!(decode(&bytes).unwrap(), doc);
        // tract's parser never fills a comprehension's filter; the AST has one.
        let body = doc.fragments[0].body.as_mut().unwrap();
        let RValue::Comprehension(c) = &mut body[2].right else {
            panic!("{:?}", body[2].right)
        };
        c.filter = Some(RValue::Literal(Literal::Logical(true)));
        assert_eq!(decode(&encode(&doc)).unwrap(), doc);
    }

    #[test]
    fn damaged_bytes_are_errors_not_panics() {
        let doc = parse_document(EVERYTHING).unwrap();
        let bytes = encode(&doc);
        assert_eq!(decode(b"OPNB\x02"), Err(DecodeError::Magic));
        assert_eq!(decode(b""), Err(DecodeError::Magic));
        // Every truncation fails cleanly.
        for end in 0..bytes.len() {
            assert!(decode(&bytes[..end]).is_err(), "truncated at {end}");
        }
        // Every single-byte change either fails or decodes to some document.
        for i in MAGIC.len()..bytes.len() {
            for delta in [1u8, 0x55, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] = damaged[i].wrapping_add(delta);
                let _ = decode(&damaged);
            }
        }
        // Random multi-byte damage (a small deterministic fuzzer).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut damaged = bytes.clone();
            for _ in 0..1 + next() % 8 {
                let i = MAGIC.len() + (next() as usize) % (bytes.len() - MAGIC.len());
                damaged[i] = next() as u8;
            }
            damaged.truncate(MAGIC.len() + (next() as usize) % (bytes.len() + 1));
            let _ = decode(&damaged);
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(DecodeError::Malformed(_))));
        // A huge length is refused before any allocation.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[0xff; 9]);
        huge.push(0x01);
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut value = RValue::Literal(Literal::Numeric("1".into()));
        for _ in 0..MAX_DEPTH + 5 {
            value = RValue::Array(vec![value]);
        }
        let mut doc = parse_document("version 1.0;\ngraph g() -> (x) {\n  x = 1;\n}\n").unwrap();
        doc.graph_def.body[0].right = value;
        assert_eq!(
            decode(&encode(&doc)),
            Err(DecodeError::Malformed("nested too deeply"))
        );
    }
}
