//! The codes of the pointwise kernels' ops, read from the lists `TG_UNARY_OPS` in `kernels/unary.cu` and
//! `TG_BINARY_OPS` in `kernels/binary.cu` while the crate compiles: the kernels switch on the same lists, so a
//! name missing from either side is a build error, never a kernel computing the wrong op.
//!
//! `const { unary("NEG") }` is the code of `NEG`: its position in the list. A name missing from the list panics
//! in that `const`, which fails `cargo build` (`cargo check` does not evaluate it).

const UNARY: &[u8] = include_bytes!("../../kernels/unary.cu");
const BINARY: &[u8] = include_bytes!("../../kernels/binary.cu");

/// The code of unary op `name` (evaluate it in a `const` so a missing name fails the build).
pub const fn unary(name: &str) -> i32 {
    position(UNARY, b"#define TG_UNARY_OPS(X)", name.as_bytes())
}

/// The code of binary op `name` (evaluate it in a `const` so a missing name fails the build).
pub const fn binary(name: &str) -> i32 {
    position(BINARY, b"#define TG_BINARY_OPS(X)", name.as_bytes())
}

/// Whether `text[at..]` starts with `prefix`.
const fn starts_with_at(text: &[u8], at: usize, prefix: &[u8]) -> bool {
    if at + prefix.len() > text.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if text[at + i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The index of `X(name, …)` (or `X(name)`) among the entries of the macro `list` in `text`: a `#define` line
/// continued by trailing backslashes, each entry an `X(` after white space.
const fn position(text: &[u8], list: &[u8], name: &[u8]) -> i32 {
    let mut at = 0;
    while at < text.len() && !((at == 0 || text[at - 1] == b'\n') && starts_with_at(text, at, list))
    {
        at += 1;
    }
    assert!(at < text.len(), "a kernel file lacks its op list");
    at += list.len();
    let mut index = 0;
    while at < text.len() {
        if text[at] == b'\n' && text[at - 1] != b'\\' {
            break;
        }
        let after_space = text[at - 1] == b' ' || text[at - 1] == b'\n';
        if after_space && starts_with_at(text, at, b"X(") {
            let begin = at + 2;
            let end = begin + name.len();
            if starts_with_at(text, begin, name)
                && end < text.len()
                && (text[end] == b')' || text[end] == b',')
            {
                return index;
            }
            index += 1;
        }
        at += 1;
    }
    panic!("an op is missing from the op lists of kernels/unary.cu or kernels/binary.cu")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_positions_in_the_lists() {
        assert_eq!(const { unary("NEG") }, 0);
        assert_eq!(const { unary("POWF") }, 5);
        assert_eq!(const { unary("ADD_SCALAR") }, 9);
        assert_eq!(const { binary("ADD") }, 0);
        assert_eq!(const { binary("DIV") }, 3);
    }

    #[test]
    #[should_panic(expected = "missing")]
    fn a_name_not_in_the_list_is_refused() {
        // At run time here; inside `const { }` the same panic is a build error.
        std::hint::black_box(unary("NEGATE"));
    }

    #[test]
    #[should_panic(expected = "missing")]
    fn a_prefix_of_a_name_is_not_the_name() {
        std::hint::black_box(unary("ADD"));
    }
}
