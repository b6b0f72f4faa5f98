//! The codes of the pointwise kernels' ops, read from the lists `TG_UNARY_OPS` and `TG_BINARY_OPS` in
//! `kernels/common.cuh` while the crate compiles: the kernels switch on the same lists, so a name missing from
//! either side is a build error, never a kernel computing the wrong op.
//!
//! `const { unary("NEG") }` is the code of `NEG`: its position in the list. A name missing from the list panics
//! in that `const`, which fails `cargo build` (`cargo check` does not evaluate it).

const COMMON: &[u8] = include_bytes!("../../kernels/common.cuh");

/// The code of unary op `name` (evaluate it in a `const` so a missing name fails the build).
pub const fn unary(name: &str) -> i32 {
    position(b"#define TG_UNARY_OPS(X)", name.as_bytes())
}

/// The code of binary op `name` (evaluate it in a `const` so a missing name fails the build).
pub const fn binary(name: &str) -> i32 {
    position(b"#define TG_BINARY_OPS(X)", name.as_bytes())
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

/// The index of `X(name)` among the `X(...)` entries of the line that starts with `list`.
const fn position(list: &[u8], name: &[u8]) -> i32 {
    let text = COMMON;
    let mut at = 0;
    while at < text.len() && !((at == 0 || text[at - 1] == b'\n') && starts_with_at(text, at, list))
    {
        at += 1;
    }
    assert!(at < text.len(), "kernels/common.cuh lacks an op list");
    at += list.len();
    let mut index = 0;
    while at < text.len() && text[at] != b'\n' {
        if starts_with_at(text, at, b"X(") {
            let begin = at + 2;
            if starts_with_at(text, begin, name)
                && begin + name.len() < text.len()
                && text[begin + name.len()] == b')'
            {
                return index;
            }
            index += 1;
        }
        at += 1;
    }
    panic!("an op is missing from the lists of kernels/common.cuh")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_positions_in_the_lists() {
        assert_eq!(const { unary("NEG") }, 0);
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
}
