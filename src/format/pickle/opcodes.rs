//! The pickle opcodes (protocols 0–5): one table of byte, name and argument, read by
//! the VM ([`super`]) and the writer ([`crate::format::write::pickle`]). Names and
//! argument kinds are CPython's (`pickletools.opcodes`).

/// What follows an opcode in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// Nothing.
    None,
    /// A 1-byte unsigned integer.
    U8,
    /// A 2-byte little-endian unsigned integer.
    U16,
    /// A 4-byte little-endian signed integer.
    I32,
    /// A 4-byte little-endian unsigned integer.
    U32,
    /// An 8-byte little-endian unsigned integer.
    U64,
    /// An 8-byte big-endian IEEE double.
    F64,
    /// Text up to a newline.
    Line,
    /// Two newline-terminated lines (module and name).
    TwoLines,
    /// Bytes after a 1-byte length.
    Bytes1,
    /// Bytes after a 4-byte little-endian length.
    Bytes4,
    /// Bytes after an 8-byte little-endian length.
    Bytes8,
}

/// One opcode: its byte, CPython's name and its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opcode {
    pub code: u8,
    pub name: &'static str,
    pub arg: Arg,
}

pub const MARK: u8 = b'(';
pub const STOP: u8 = b'.';
pub const POP: u8 = b'0';
pub const POP_MARK: u8 = b'1';
pub const DUP: u8 = b'2';
pub const FLOAT: u8 = b'F';
pub const INT: u8 = b'I';
pub const BININT: u8 = b'J';
pub const BININT1: u8 = b'K';
pub const LONG: u8 = b'L';
pub const BININT2: u8 = b'M';
pub const NONE: u8 = b'N';
pub const PERSID: u8 = b'P';
pub const BINPERSID: u8 = b'Q';
pub const REDUCE: u8 = b'R';
pub const STRING: u8 = b'S';
pub const BINSTRING: u8 = b'T';
pub const SHORT_BINSTRING: u8 = b'U';
pub const UNICODE: u8 = b'V';
pub const BINUNICODE: u8 = b'X';
pub const APPEND: u8 = b'a';
pub const BUILD: u8 = b'b';
pub const GLOBAL: u8 = b'c';
pub const DICT: u8 = b'd';
pub const EMPTY_DICT: u8 = b'}';
pub const APPENDS: u8 = b'e';
pub const GET: u8 = b'g';
pub const BINGET: u8 = b'h';
pub const INST: u8 = b'i';
pub const LONG_BINGET: u8 = b'j';
pub const LIST: u8 = b'l';
pub const EMPTY_LIST: u8 = b']';
pub const OBJ: u8 = b'o';
pub const PUT: u8 = b'p';
pub const BINPUT: u8 = b'q';
pub const LONG_BINPUT: u8 = b'r';
pub const SETITEM: u8 = b's';
pub const TUPLE: u8 = b't';
pub const EMPTY_TUPLE: u8 = b')';
pub const SETITEMS: u8 = b'u';
pub const BINFLOAT: u8 = b'G';
pub const PROTO: u8 = 0x80;
pub const NEWOBJ: u8 = 0x81;
pub const EXT1: u8 = 0x82;
pub const EXT2: u8 = 0x83;
pub const EXT4: u8 = 0x84;
pub const TUPLE1: u8 = 0x85;
pub const TUPLE2: u8 = 0x86;
pub const TUPLE3: u8 = 0x87;
pub const NEWTRUE: u8 = 0x88;
pub const NEWFALSE: u8 = 0x89;
pub const LONG1: u8 = 0x8a;
pub const LONG4: u8 = 0x8b;
pub const BINBYTES: u8 = b'B';
pub const SHORT_BINBYTES: u8 = b'C';
pub const SHORT_BINUNICODE: u8 = 0x8c;
pub const BINUNICODE8: u8 = 0x8d;
pub const BINBYTES8: u8 = 0x8e;
pub const EMPTY_SET: u8 = 0x8f;
pub const ADDITEMS: u8 = 0x90;
pub const FROZENSET: u8 = 0x91;
pub const NEWOBJ_EX: u8 = 0x92;
pub const STACK_GLOBAL: u8 = 0x93;
pub const MEMOIZE: u8 = 0x94;
pub const FRAME: u8 = 0x95;
pub const BYTEARRAY8: u8 = 0x96;
pub const NEXT_BUFFER: u8 = 0x97;
pub const READONLY_BUFFER: u8 = 0x98;

/// Every opcode, in the order of `pickletools.opcodes`' protocols (0, 1, 2, 3, 4, 5).
pub static TABLE: [Opcode; 68] = [
    Opcode {
        code: MARK,
        name: "MARK",
        arg: Arg::None,
    },
    Opcode {
        code: STOP,
        name: "STOP",
        arg: Arg::None,
    },
    Opcode {
        code: POP,
        name: "POP",
        arg: Arg::None,
    },
    Opcode {
        code: POP_MARK,
        name: "POP_MARK",
        arg: Arg::None,
    },
    Opcode {
        code: DUP,
        name: "DUP",
        arg: Arg::None,
    },
    Opcode {
        code: FLOAT,
        name: "FLOAT",
        arg: Arg::Line,
    },
    Opcode {
        code: INT,
        name: "INT",
        arg: Arg::Line,
    },
    Opcode {
        code: BININT,
        name: "BININT",
        arg: Arg::I32,
    },
    Opcode {
        code: BININT1,
        name: "BININT1",
        arg: Arg::U8,
    },
    Opcode {
        code: LONG,
        name: "LONG",
        arg: Arg::Line,
    },
    Opcode {
        code: BININT2,
        name: "BININT2",
        arg: Arg::U16,
    },
    Opcode {
        code: NONE,
        name: "NONE",
        arg: Arg::None,
    },
    Opcode {
        code: PERSID,
        name: "PERSID",
        arg: Arg::Line,
    },
    Opcode {
        code: BINPERSID,
        name: "BINPERSID",
        arg: Arg::None,
    },
    Opcode {
        code: REDUCE,
        name: "REDUCE",
        arg: Arg::None,
    },
    Opcode {
        code: STRING,
        name: "STRING",
        arg: Arg::Line,
    },
    Opcode {
        code: BINSTRING,
        name: "BINSTRING",
        arg: Arg::Bytes4,
    },
    Opcode {
        code: SHORT_BINSTRING,
        name: "SHORT_BINSTRING",
        arg: Arg::Bytes1,
    },
    Opcode {
        code: UNICODE,
        name: "UNICODE",
        arg: Arg::Line,
    },
    Opcode {
        code: BINUNICODE,
        name: "BINUNICODE",
        arg: Arg::Bytes4,
    },
    Opcode {
        code: APPEND,
        name: "APPEND",
        arg: Arg::None,
    },
    Opcode {
        code: BUILD,
        name: "BUILD",
        arg: Arg::None,
    },
    Opcode {
        code: GLOBAL,
        name: "GLOBAL",
        arg: Arg::TwoLines,
    },
    Opcode {
        code: DICT,
        name: "DICT",
        arg: Arg::None,
    },
    Opcode {
        code: EMPTY_DICT,
        name: "EMPTY_DICT",
        arg: Arg::None,
    },
    Opcode {
        code: APPENDS,
        name: "APPENDS",
        arg: Arg::None,
    },
    Opcode {
        code: GET,
        name: "GET",
        arg: Arg::Line,
    },
    Opcode {
        code: BINGET,
        name: "BINGET",
        arg: Arg::U8,
    },
    Opcode {
        code: INST,
        name: "INST",
        arg: Arg::TwoLines,
    },
    Opcode {
        code: LONG_BINGET,
        name: "LONG_BINGET",
        arg: Arg::U32,
    },
    Opcode {
        code: LIST,
        name: "LIST",
        arg: Arg::None,
    },
    Opcode {
        code: EMPTY_LIST,
        name: "EMPTY_LIST",
        arg: Arg::None,
    },
    Opcode {
        code: OBJ,
        name: "OBJ",
        arg: Arg::None,
    },
    Opcode {
        code: PUT,
        name: "PUT",
        arg: Arg::Line,
    },
    Opcode {
        code: BINPUT,
        name: "BINPUT",
        arg: Arg::U8,
    },
    Opcode {
        code: LONG_BINPUT,
        name: "LONG_BINPUT",
        arg: Arg::U32,
    },
    Opcode {
        code: SETITEM,
        name: "SETITEM",
        arg: Arg::None,
    },
    Opcode {
        code: TUPLE,
        name: "TUPLE",
        arg: Arg::None,
    },
    Opcode {
        code: EMPTY_TUPLE,
        name: "EMPTY_TUPLE",
        arg: Arg::None,
    },
    Opcode {
        code: SETITEMS,
        name: "SETITEMS",
        arg: Arg::None,
    },
    Opcode {
        code: BINFLOAT,
        name: "BINFLOAT",
        arg: Arg::F64,
    },
    Opcode {
        code: PROTO,
        name: "PROTO",
        arg: Arg::U8,
    },
    Opcode {
        code: NEWOBJ,
        name: "NEWOBJ",
        arg: Arg::None,
    },
    Opcode {
        code: EXT1,
        name: "EXT1",
        arg: Arg::U8,
    },
    Opcode {
        code: EXT2,
        name: "EXT2",
        arg: Arg::U16,
    },
    Opcode {
        code: EXT4,
        name: "EXT4",
        arg: Arg::I32,
    },
    Opcode {
        code: TUPLE1,
        name: "TUPLE1",
        arg: Arg::None,
    },
    Opcode {
        code: TUPLE2,
        name: "TUPLE2",
        arg: Arg::None,
    },
    Opcode {
        code: TUPLE3,
        name: "TUPLE3",
        arg: Arg::None,
    },
    Opcode {
        code: NEWTRUE,
        name: "NEWTRUE",
        arg: Arg::None,
    },
    Opcode {
        code: NEWFALSE,
        name: "NEWFALSE",
        arg: Arg::None,
    },
    Opcode {
        code: LONG1,
        name: "LONG1",
        arg: Arg::Bytes1,
    },
    Opcode {
        code: LONG4,
        name: "LONG4",
        arg: Arg::Bytes4,
    },
    Opcode {
        code: BINBYTES,
        name: "BINBYTES",
        arg: Arg::Bytes4,
    },
    Opcode {
        code: SHORT_BINBYTES,
        name: "SHORT_BINBYTES",
        arg: Arg::Bytes1,
    },
    Opcode {
        code: SHORT_BINUNICODE,
        name: "SHORT_BINUNICODE",
        arg: Arg::Bytes1,
    },
    Opcode {
        code: BINUNICODE8,
        name: "BINUNICODE8",
        arg: Arg::Bytes8,
    },
    Opcode {
        code: BINBYTES8,
        name: "BINBYTES8",
        arg: Arg::Bytes8,
    },
    Opcode {
        code: EMPTY_SET,
        name: "EMPTY_SET",
        arg: Arg::None,
    },
    Opcode {
        code: ADDITEMS,
        name: "ADDITEMS",
        arg: Arg::None,
    },
    Opcode {
        code: FROZENSET,
        name: "FROZENSET",
        arg: Arg::None,
    },
    Opcode {
        code: NEWOBJ_EX,
        name: "NEWOBJ_EX",
        arg: Arg::None,
    },
    Opcode {
        code: STACK_GLOBAL,
        name: "STACK_GLOBAL",
        arg: Arg::None,
    },
    Opcode {
        code: MEMOIZE,
        name: "MEMOIZE",
        arg: Arg::None,
    },
    Opcode {
        code: FRAME,
        name: "FRAME",
        arg: Arg::U64,
    },
    Opcode {
        code: BYTEARRAY8,
        name: "BYTEARRAY8",
        arg: Arg::Bytes8,
    },
    Opcode {
        code: NEXT_BUFFER,
        name: "NEXT_BUFFER",
        arg: Arg::None,
    },
    Opcode {
        code: READONLY_BUFFER,
        name: "READONLY_BUFFER",
        arg: Arg::None,
    },
];

/// The opcode of each byte (`None`: not an opcode).
static BY_CODE: [Option<Opcode>; 256] = {
    let mut by_code = [None; 256];
    let mut i = 0;
    while i < TABLE.len() {
        by_code[TABLE[i].code as usize] = Some(TABLE[i]);
        i += 1;
    }
    by_code
};

/// The opcode `code` is, if it is one.
#[inline]
pub fn get(code: u8) -> Option<Opcode> {
    BY_CODE[usize::from(code)]
}

/// Whether `code` is an opcode.
#[inline]
pub fn is_known(code: u8) -> bool {
    BY_CODE[usize::from(code)].is_some()
}

/// CPython's name of the opcode `code`.
pub fn name(code: u8) -> Option<&'static str> {
    get(code).map(|o| o.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_and_name_is_in_the_table_once() {
        let mut codes = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for o in &TABLE {
            assert!(codes.insert(o.code), "{} twice", o.code);
            assert!(names.insert(o.name), "{} twice", o.name);
            assert_eq!(get(o.code), Some(*o));
        }
        // Protocol 5 defines 68 opcodes; everything else is unknown.
        assert_eq!(TABLE.len(), 68);
        assert_eq!((0..=255u8).filter(|&c| is_known(c)).count(), 68);
        assert_eq!(name(0xfe), None);
        assert_eq!(name(BINUNICODE), Some("BINUNICODE"));
        assert_eq!(get(FRAME).map(|o| o.arg), Some(Arg::U64));
    }
}
