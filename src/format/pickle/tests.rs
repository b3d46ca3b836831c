use super::*;
use crate::format::dtype::f16_to_f64;

macro_rules! case {
    ($name:expr) => {
        include_bytes!(concat!("../../../tests/fixtures/pickles/", $name))
    };
}

/// Every generated plain case, per protocol 0..=5.
const INTS: [&[u8]; 6] = [
    case!("ints_p0.pkl"),
    case!("ints_p1.pkl"),
    case!("ints_p2.pkl"),
    case!("ints_p3.pkl"),
    case!("ints_p4.pkl"),
    case!("ints_p5.pkl"),
];
const FLOATS: [&[u8]; 6] = [
    case!("floats_p0.pkl"),
    case!("floats_p1.pkl"),
    case!("floats_p2.pkl"),
    case!("floats_p3.pkl"),
    case!("floats_p4.pkl"),
    case!("floats_p5.pkl"),
];
const STRS: [&[u8]; 6] = [
    case!("strs_p0.pkl"),
    case!("strs_p1.pkl"),
    case!("strs_p2.pkl"),
    case!("strs_p3.pkl"),
    case!("strs_p4.pkl"),
    case!("strs_p5.pkl"),
];
const BYTES: [&[u8]; 6] = [
    case!("bytes_p0.pkl"),
    case!("bytes_p1.pkl"),
    case!("bytes_p2.pkl"),
    case!("bytes_p3.pkl"),
    case!("bytes_p4.pkl"),
    case!("bytes_p5.pkl"),
];
const CONTAINERS: [&[u8]; 6] = [
    case!("containers_p0.pkl"),
    case!("containers_p1.pkl"),
    case!("containers_p2.pkl"),
    case!("containers_p3.pkl"),
    case!("containers_p4.pkl"),
    case!("containers_p5.pkl"),
];
const SHARED: [&[u8]; 6] = [
    case!("shared_p0.pkl"),
    case!("shared_p1.pkl"),
    case!("shared_p2.pkl"),
    case!("shared_p3.pkl"),
    case!("shared_p4.pkl"),
    case!("shared_p5.pkl"),
];
const ORDERED: [&[u8]; 6] = [
    case!("ordereddict_p0.pkl"),
    case!("ordereddict_p1.pkl"),
    case!("ordereddict_p2.pkl"),
    case!("ordereddict_p3.pkl"),
    case!("ordereddict_p4.pkl"),
    case!("ordereddict_p5.pkl"),
];
const NAMESPACE: [&[u8]; 6] = [
    case!("namespace_p0.pkl"),
    case!("namespace_p1.pkl"),
    case!("namespace_p2.pkl"),
    case!("namespace_p3.pkl"),
    case!("namespace_p4.pkl"),
    case!("namespace_p5.pkl"),
];
const BUILTINS: [&[u8]; 6] = [
    case!("builtins_p0.pkl"),
    case!("builtins_p1.pkl"),
    case!("builtins_p2.pkl"),
    case!("builtins_p3.pkl"),
    case!("builtins_p4.pkl"),
    case!("builtins_p5.pkl"),
];
const NUMPY: [&[u8]; 6] = [
    case!("numpy_p0.pkl"),
    case!("numpy_p1.pkl"),
    case!("numpy_p2.pkl"),
    case!("numpy_p3.pkl"),
    case!("numpy_p4.pkl"),
    case!("numpy_p5.pkl"),
];
const BIG_P4: &[u8] = case!("big_p4.pkl");
const BYTEARRAY_P5: &[u8] = case!("bytearray_p5.pkl");

fn all_cases() -> Vec<&'static [u8]> {
    let mut v: Vec<&[u8]> = Vec::new();
    for set in [
        INTS, FLOATS, STRS, BYTES, CONTAINERS, SHARED, ORDERED, NAMESPACE, BUILTINS, NUMPY,
    ] {
        v.extend(set);
    }
    v.push(BIG_P4);
    v.push(BYTEARRAY_P5);
    v
}

/// Parse a pickle that must be clean (no findings).
fn clean(b: &[u8]) -> Value {
    let out = parse_plain(b).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert_eq!(out.end, b.len());
    out.value
}

fn err(b: &[u8]) -> String {
    parse_plain(b).unwrap_err().to_string()
}

fn s(x: &str) -> Value {
    Value::Str(x.into())
}
fn i(x: i64) -> Value {
    Value::Int(x)
}
fn big(x: &str) -> Value {
    Value::BigInt(x.into())
}
fn unsafe_globals(out: &Outcome) -> Vec<String> {
    out.findings
        .iter()
        .filter_map(|f| match f {
            Finding::UnsafeGlobal { global, .. } => Some(global.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn ints_and_longs_in_every_protocol() {
    let want = Value::List(vec![
        i(0),
        i(1),
        i(-1),
        i(255),
        i(256),
        i(65535),
        i(65536),
        i(-(1 << 31)),
        i(1 << 31),
        i(i64::MAX),
        i(i64::MIN),
        big("9223372036854775808"),
        big("-9223372036854775809"),
        big("1000000000000000000000000000000"),
        big("-1000000000000000000000000000000"),
        Value::Bool(true),
        Value::Bool(false),
    ]);
    for (p, b) in INTS.iter().enumerate() {
        assert_eq!(clean(b), want, "protocol {p}");
    }
}

#[test]
fn long_decoding() {
    assert_eq!(decode_long(&[]), i(0));
    assert_eq!(decode_long(&[0xff]), i(-1));
    assert_eq!(decode_long(&[0xff; 9]), i(-1));
    assert_eq!(decode_long(&[0x00, 0x80]), i(-32768));
    let mut b = vec![0u8; 8];
    b.push(1);
    assert_eq!(decode_long(&b), big("18446744073709551616"));
    let mut b = vec![0u8; 8];
    b.push(0xff);
    assert_eq!(decode_long(&b), big("-18446744073709551616"));
    // text forms
    assert_eq!(
        clean(b"L12345678901234567890L\n."),
        big("12345678901234567890")
    );
    assert_eq!(clean(b"I-5\n."), i(-5));
    assert_eq!(clean(b"L-0000L\n."), i(0));
    assert_eq!(clean(b"\x80\x02\x8b\x02\x00\x00\x00\xff\x7f."), i(32767));
    assert!(err(b"I12x\n.").contains("bad integer"));
    // absurd LONG4 lengths are checked against the data
    assert!(err(b"\x80\x02\x8b\xff\xff\xff\x7f\x00.").contains("cut short"));
    let mut huge = b"\x80\x02\x8b\x10\x27\x00\x00".to_vec();
    huge.extend(vec![1u8; 10_000]);
    huge.push(b'.');
    assert!(err(&huge).contains("too large"));
}

#[test]
fn floats_in_every_protocol() {
    let want = [
        0.0,
        -0.0,
        1.5,
        1e-08,
        -2.5e300,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    for (p, b) in FLOATS.iter().enumerate() {
        let Value::List(items) = clean(b) else {
            panic!("not a list")
        };
        assert_eq!(items.len(), want.len());
        for (v, w) in items.iter().zip(want) {
            let Value::Float(f) = v else {
                panic!("protocol {p}: {v:?}")
            };
            assert_eq!(f.to_bits(), w.to_bits(), "protocol {p}");
        }
    }
    assert!(matches!(clean(b"Fnan\n."), Value::Float(f) if f.is_nan()));
    assert!(err(b"Fxyz\n.").contains("bad float"));
}

#[test]
fn strings_in_every_protocol() {
    let want = Value::List(vec![
        s(""),
        s("plain"),
        s("h\u{e9}llo\nworld\\u005c \u{1F600} \u{20ac}"),
    ]);
    for (p, b) in STRS.iter().enumerate() {
        assert_eq!(clean(b), want, "protocol {p}");
    }
    // Python 2 str opcodes: quoted + escaped, BINSTRING, SHORT_BINSTRING
    assert_eq!(clean(b"S'abc\\n\\x41\\101\\''\n."), s("abc\nAA'"));
    assert_eq!(clean(b"S\"q\"\n."), s("q"));
    assert!(err(b"Sabc\n.").contains("not quoted"));
    assert_eq!(clean(b"T\x03\x00\x00\x00abc."), s("abc"));
    assert_eq!(clean(b"U\x02\xff\xfe."), Value::Bytes(vec![0xff, 0xfe]));
    // protocol 4 long forms
    assert_eq!(
        clean(b"\x80\x04\x8d\x02\x00\x00\x00\x00\x00\x00\x00hi."),
        s("hi")
    );
    assert_eq!(clean(b"\x80\x04\x8c\x02hi."), s("hi"));
    // raw-unicode-escape: surrogate pairs combine, lone ones are replaced
    assert_eq!(clean(b"V\\ud83d\\ude00\n."), s("\u{1F600}"));
    assert_eq!(clean(b"V\\ud800x\n."), s("\u{FFFD}x"));
    assert_eq!(clean(b"V\\\\u0041\n."), s("\\\\u0041"));
}

#[test]
fn bytes_in_every_protocol() {
    let mut long = Vec::new();
    for _ in 0..2 {
        long.extend(0u8..=255);
    }
    let want = Value::List(vec![
        Value::Bytes(vec![]),
        Value::Bytes(b"\x00\xff abc".to_vec()),
        Value::Bytes(long),
    ]);
    // protocols 0–2 go through _codecs.encode(str, 'latin1') / builtins.bytes()
    for (p, b) in BYTES.iter().enumerate() {
        assert_eq!(clean(b), want, "protocol {p}");
    }
    assert_eq!(
        clean(b"\x80\x04\x8e\x01\x00\x00\x00\x00\x00\x00\x00Z."),
        Value::Bytes(b"Z".to_vec())
    );
    assert_eq!(clean(BYTEARRAY_P5), Value::Bytes(b"hello".to_vec()));
    assert!(BYTEARRAY_P5.contains(&0x96), "BYTEARRAY8 is exercised");
}

#[test]
fn containers_in_every_protocol() {
    let want = Value::Dict(vec![
        (
            s("list"),
            Value::List(vec![i(1), Value::List(vec![i(2), i(3)])]),
        ),
        (s("tuple0"), Value::Tuple(vec![])),
        (s("tuple1"), Value::Tuple(vec![i(1)])),
        (s("tuple2"), Value::Tuple(vec![i(1), i(2)])),
        (s("tuple3"), Value::Tuple(vec![i(1), i(2), i(3)])),
        (
            s("tuple5"),
            Value::Tuple(vec![i(1), i(2), i(3), i(4), i(5)]),
        ),
        (
            s("dict"),
            Value::Dict(vec![(s("a"), Value::None), (i(7), s("seven"))]),
        ),
        (s("set"), Value::List(vec![i(42)])),
        (s("frozenset"), Value::List(vec![i(43)])),
        (
            s("nested"),
            Value::Dict(vec![(
                s("x"),
                Value::Dict(vec![(
                    s("y"),
                    Value::Dict(vec![(s("z"), Value::List(vec![]))]),
                )]),
            )]),
        ),
    ]);
    for (p, b) in CONTAINERS.iter().enumerate() {
        assert_eq!(clean(b), want, "protocol {p}");
    }
    let shared = Value::List(vec![i(1), i(2)]);
    let want = Value::Dict(vec![
        (s("a"), shared.clone()),
        (s("b"), shared.clone()),
        (s("c"), Value::Tuple(vec![shared.clone(), shared])),
    ]);
    for (p, b) in SHARED.iter().enumerate() {
        assert_eq!(clean(b), want, "protocol {p}");
    }
}

#[test]
fn memo_sees_mutation_after_put() {
    // outer = {}; d = {}; outer['a'] = d; outer['b'] = d; then d['k'] = 'v' via BINGET.
    let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00a}q\x01X\x01\x00\x00\x00bh\x01u\
              h\x01X\x01\x00\x00\x00kX\x01\x00\x00\x00vs0.";
    let d = Value::Dict(vec![(s("k"), s("v"))]);
    assert_eq!(
        clean(p),
        Value::Dict(vec![(s("a"), d.clone()), (s("b"), d)])
    );
    // a list appended to after it was referenced
    let p = b"\x80\x02]q\x00(h\x00h\x00lq\x01h\x00K\x07a0.";
    let l = Value::List(vec![i(7)]);
    assert_eq!(clean(p), Value::List(vec![l.clone(), l]));
    // PUT/GET text forms, MEMOIZE
    assert_eq!(
        clean(b"(lp0\nI1\na(g0\nl."),
        Value::List(vec![Value::List(vec![i(1)])])
    );
    assert_eq!(
        clean(b"\x80\x04]\x94h\x00\x86."),
        Value::Tuple(vec![Value::List(vec![]), Value::List(vec![])])
    );
}

#[test]
fn dict_semantics() {
    // later keys overwrite earlier ones in place; True == 1
    assert_eq!(
        clean(b"\x80\x02}(K\x01K\x02K\x05K\x06\x88K\x03u."),
        Value::Dict(vec![(i(1), i(3)), (i(5), i(6))])
    );
    assert_eq!(clean(b"(I1\nI2\nd."), Value::Dict(vec![(i(1), i(2))]));
    assert!(err(b"\x80\x02}(]K\x01u.").contains("unhashable"));
    assert!(err(b"\x80\x02(K\x01d.").contains("odd number"));
}

#[test]
fn memo_keys_large_small_and_memoize() {
    // A huge key, a key stored before the dense table reaches it (and overwritten
    // after), thousands of small keys; MEMOIZE numbers by distinct keys (as CPython).
    let put = |k: u32| [&b"r"[..], &k.to_le_bytes()].concat();
    let get = |k: u32| [&b"j"[..], &k.to_le_bytes()].concat();
    let mut p = b"\x80\x04".to_vec();
    p.extend([&b"K\x07"[..], &put(u32::MAX), b"0"].concat());
    p.extend([&b"K\x09"[..], &put(4096), b"0"].concat());
    for k in 0..2100 {
        p.extend([&b"N"[..], &put(k), b"0"].concat());
    }
    p.extend([&b"K\x0a"[..], &put(4096), b"0"].concat());
    p.extend_from_slice(b"K\x0b\x940(");
    p.extend([get(u32::MAX), get(4096), get(2102)].concat());
    p.extend_from_slice(b"h\x05l.");
    assert_eq!(
        clean(&p),
        Value::List(vec![i(7), i(10), i(11), Value::None])
    );
}

#[test]
fn dict_keys_compare_alike_in_small_and_big_dicts() {
    // The same updates on a dict of 4 and of 40 int keys (linear search vs index):
    // True == 1, 2.0 == 2, (True, 2.0) == (1, 2), str keys.
    for n in [4u8, 40] {
        let mut p = b"\x80\x02}(".to_vec();
        for k in 0..n {
            p.extend_from_slice(&[b'K', k, b'K', k]);
        }
        p.extend_from_slice(b"u(\x88Kd");
        p.push(b'G');
        p.extend_from_slice(&2.0f64.to_be_bytes());
        p.extend_from_slice(b"KfK\x01K\x02\x86K\x05\x88G");
        p.extend_from_slice(&2.0f64.to_be_bytes());
        p.extend_from_slice(b"\x86K\x06X\x01\x00\x00\x00aK\x07X\x01\x00\x00\x00aK\x08u.");
        let mut want: Vec<(Value, Value)> = (0..i64::from(n)).map(|k| (i(k), i(k))).collect();
        want[1].1 = i(100);
        want[2].1 = i(102);
        want.push((Value::Tuple(vec![i(1), i(2)]), i(6)));
        want.push((s("a"), i(8)));
        assert_eq!(clean(&p), Value::Dict(want), "{n} keys");
    }
}

#[test]
fn mark_pop_dup() {
    assert_eq!(clean(b"\x80\x02K\x01K\x020."), i(1));
    assert_eq!(clean(b"\x80\x02K\x01(K\x02K\x031."), i(1));
    assert_eq!(clean(b"\x80\x02K\x01(0."), i(1)); // POP of a bare mark
    assert_eq!(
        clean(b"\x80\x02K\x012\x86."),
        Value::Tuple(vec![i(1), i(1)])
    );
    // items below a mark are out of reach
    assert!(err(b"\x80\x02K\x01(K\x02\x86.").contains("stack underflow"));
    assert!(err(b"\x80\x021.").contains("no MARK"));
}

#[test]
fn protocol4_frames_stack_global_memoize() {
    for op in [0x95u8, 0x93, 0x94] {
        assert!(BIG_P4.contains(&op));
    }
    let Value::Dict(items) = clean(BIG_P4) else {
        panic!()
    };
    assert_eq!(items.len(), 50);
    assert_eq!(
        items[49],
        (
            s("key49"),
            Value::List(vec![i(49), Value::Float(49.0), s("49")])
        )
    );
    assert!(err(b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00.").contains("frame"));
    assert!(err(b"\x80\x04K\x01K\x02\x93.").contains("two strings"));
}

#[test]
fn ordered_dict_namespace_builtins() {
    for (p, b) in ORDERED.iter().enumerate() {
        assert_eq!(
            clean(b),
            Value::Dict(vec![(s("w"), i(1)), (s("v"), i(2))]),
            "protocol {p}"
        );
    }
    for (p, b) in NAMESPACE.iter().enumerate() {
        let v = clean(b);
        let Value::Object { class, .. } = &v else {
            panic!("protocol {p}: {v:?}")
        };
        assert_eq!(class, "argparse.Namespace");
        assert_eq!(v.get("lr"), Some(&Value::Float(0.1)), "protocol {p}");
        assert_eq!(v.get("name"), Some(&s("run")));
        assert_eq!(v.get("layers"), Some(&Value::List(vec![i(64), i(64)])));
    }
    let obj = |class: &str, args: Vec<Value>| Value::Object {
        class: class.into(),
        args,
        state: None,
    };
    let want = Value::List(vec![
        obj(
            "builtins.complex",
            vec![Value::Float(1.5), Value::Float(-2.0)],
        ),
        obj("builtins.slice", vec![i(1), i(10), i(2)]),
        Value::Bytes(b"ab\x00".to_vec()),
        Value::List(vec![i(3)]),
        Value::List(vec![]),
    ]);
    for (p, b) in BUILTINS.iter().enumerate() {
        assert_eq!(clean(b), want, "protocol {p}");
    }
    // NEWOBJ_EX with keyword arguments
    let v = clean(b"\x80\x04cargparse\nNamespace\n)}X\x01\x00\x00\x00aK\x01s\x92.");
    assert_eq!(v.get("a"), Some(&i(1)));
    // INST and OBJ (protocol 0/1 instance creation) followed by BUILD
    let v = clean(b"(iargparse\nNamespace\n(dS'a'\nI1\nsb.");
    assert_eq!(v.get("a"), Some(&i(1)));
    let v = clean(b"(cargparse\nNamespace\no(dS'a'\nI1\nsb.");
    assert_eq!(v.get("a"), Some(&i(1)));
    // torch.Size, torch.device, torch dtypes
    assert_eq!(
        clean(b"\x80\x02ctorch\nSize\n]K\x02aK\x03a\x85R."),
        Value::Tuple(vec![i(2), i(3)])
    );
    assert_eq!(
        clean(b"\x80\x02ctorch\ndevice\nX\x04\x00\x00\x00cudaK\x00\x86R."),
        s("cuda:0")
    );
    assert_eq!(
        clean(b"\x80\x02ctorch\ndevice\nX\x03\x00\x00\x00cpu\x85R."),
        s("cpu")
    );
    assert_eq!(
        clean(b"\x80\x02ctorch\nbfloat16\n."),
        Value::Global("torch.bfloat16".into())
    );
}

#[test]
fn numpy_scalars_in_every_protocol() {
    let ns = |d: &str, v: Value| Value::NumpyScalar {
        dtype: d.into(),
        value: Box::new(v),
    };
    let want = Value::Dict(vec![
        (s("f8"), ns("f8", Value::Float(-0.8318))),
        (s("f4"), ns("f4", Value::Float(f64::from(0.47f32)))),
        (s("i8"), ns("i8", i(-42))),
        (s("f8be"), ns("f8", Value::Float(2.5))),
        (s("b1"), ns("b1", Value::Bool(true))),
        (s("u1"), ns("u1", i(255))),
        (s("f2"), ns("f2", Value::Float(0.5))),
    ]);
    for (p, b) in NUMPY.iter().enumerate() {
        let v = clean(b);
        assert_eq!(v, want, "protocol {p}");
        assert_eq!(v.get("f8").and_then(Value::as_f64), Some(-0.8318));
    }
    assert_eq!(
        decode_numpy("u8", '<', &[0xff; 8]),
        Some(big("18446744073709551615"))
    );
    assert_eq!(decode_numpy("i2", '>', &[0xff, 0xfe]), Some(i(-2)));
    assert_eq!(decode_numpy("M8", '<', &[0; 8]), None);
    assert_eq!(decode_numpy("f8", '<', &[0; 4]), None);
}

#[test]
fn unsafe_globals_are_blocked_and_reported_once() {
    // posix.system('ls') twice in a list: two Blocked values, one finding
    let p = b"\x80\x02(cposix\nsystem\nX\x02\x00\x00\x00ls\x85Rcposix\nsystem\nX\x02\x00\x00\x00ls\x85Rl.";
    let out = parse_plain(p).unwrap();
    let blocked = Value::Blocked {
        global: "posix.system".into(),
    };
    assert_eq!(out.value, Value::List(vec![blocked.clone(), blocked]));
    assert_eq!(unsafe_globals(&out), vec!["posix.system"]);
    // referenced, not called: still reported
    let out = parse_plain(b"\x80\x02cbuiltins\neval\n.").unwrap();
    assert_eq!(out.value, Value::Global("builtins.eval".into()));
    assert_eq!(unsafe_globals(&out), vec!["builtins.eval"]);
    // protocol-0 module names are mapped like Python's fix_imports
    let out = parse_plain(b"c__builtin__\ngetattr\n.").unwrap();
    assert_eq!(unsafe_globals(&out), vec!["builtins.getattr"]);
    // INST of an unsafe class, STACK_GLOBAL, EXT codes, NEWOBJ
    let out = parse_plain(b"(S'ls'\nios\nsystem\n.").unwrap();
    assert_eq!(
        out.value,
        Value::Blocked {
            global: "os.system".into()
        }
    );
    let out = parse_plain(b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x02ls\x85R.").unwrap();
    assert_eq!(unsafe_globals(&out), vec!["os.system"]);
    let out = parse_plain(b"\x80\x02\x82\x05.").unwrap();
    assert_eq!(unsafe_globals(&out), vec!["copyreg extension code 5"]);
    let out = parse_plain(b"\x80\x02csubprocess\nPopen\n)\x81.").unwrap();
    assert!(matches!(out.value, Value::Blocked { .. }));
    // copyreg._reconstructor only builds allowlisted classes
    let out = parse_plain(b"ccopy_reg\n_reconstructor\n(cos\nsystem\nc__builtin__\nobject\nNtR.")
        .unwrap();
    assert_eq!(
        out.value,
        Value::Blocked {
            global: "os.system".into()
        }
    );
    assert_eq!(unsafe_globals(&out), vec!["os.system"]);
    // calling the result of a blocked call stays blocked; BUILD/SETITEMS on it are ignored
    let out = parse_plain(b"\x80\x02cbuiltins\ngetattr\n)R)R}b(K\x01K\x02u(K\x03e.").unwrap();
    assert!(matches!(out.value, Value::Blocked { .. }));
    // BUILD on a global (attribute assignment on a class) is flagged
    let out = parse_plain(b"\x80\x02ctorch\nfloat32\n}b.").unwrap();
    assert_eq!(unsafe_globals(&out), vec!["torch.float32"]);
    // a safe-to-reference global that is called is kept uninterpreted, not run
    let out = parse_plain(b"\x80\x02ctorch\nTensor\n)R.").unwrap();
    assert!(matches!(out.value, Value::Object { .. }));
    assert!(unsafe_globals(&out).is_empty());
}

struct TestHost {
    pids: Vec<Value>,
}

impl Host for TestHost {
    fn persistent_load(&mut self, pid: Value) -> Result<Loaded, HostError> {
        self.pids.push(pid);
        if self.pids.len() == 1 {
            Ok(Loaded::Value(Value::List(vec![s("loaded")])))
        } else {
            Ok(Loaded::Storage(7))
        }
    }
    fn rebuild_tensor(&mut self, spec: TensorSpec) -> Result<usize, HostError> {
        assert_eq!(spec.storage, 7);
        Ok(spec.shape.len())
    }
}

/// Takes persistent ids borrowed (`items`) or as values, recording them as values.
struct ItemsHost {
    borrowed: bool,
    pids: Vec<Value>,
}

impl Host for ItemsHost {
    fn persistent_load(&mut self, pid: Value) -> Result<Loaded, HostError> {
        self.pids.push(pid);
        Ok(Loaded::Storage(self.pids.len()))
    }
    fn persistent_load_items(
        &mut self,
        items: &[PidItem<'_>],
    ) -> Option<Result<Loaded, HostError>> {
        if !self.borrowed {
            return None;
        }
        self.pids
            .push(Value::Tuple(items.iter().map(PidItem::to_value).collect()));
        Some(Ok(Loaded::Storage(self.pids.len())))
    }
    fn rebuild_tensor(&mut self, _spec: TensorSpec) -> Result<usize, HostError> {
        Err(HostError::TensorOutsideTorch)
    }
}

#[test]
fn borrowed_persistent_ids_match_materialised_ones() {
    // ('storage', torch.FloatStorage, '0', 'cpu', 5) memoised, then used n times; a
    // list id and a nested tuple id (not offered borrowed); bytes and long strings.
    let ids = |n: usize| {
        let mut p = b"\x80\x02(X\x07\x00\x00\x00storageq\x00ctorch\nFloatStorage\nq\x01".to_vec();
        p.extend_from_slice(b"X\x01\x00\x00\x000q\x02X\x03\x00\x00\x00cpuq\x03K\x05q\x040");
        for _ in 0..n {
            p.extend_from_slice(b"(h\x00h\x01h\x02h\x03h\x04tQ");
        }
        p.extend_from_slice(
            b"(h\x00h\x01]K\x01aK\x02tQ(h\x00lQ(C\x02abU\x01xJ\xff\xff\xff\xfftQl.",
        );
        p
    };
    for (n, max_values) in [(3, 10_000), (400, 1_000)] {
        let p = ids(n);
        let mut opts = Options::new("t");
        opts.max_values = max_values;
        let mut borrowed = ItemsHost {
            borrowed: true,
            pids: vec![],
        };
        let mut values = ItemsHost {
            borrowed: false,
            pids: vec![],
        };
        let a = run(&p, &mut borrowed, &opts).map(|o| o.value);
        let b = run(&p, &mut values, &opts).map(|o| o.value);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b);
                assert_eq!(borrowed.pids.len(), n + 3);
            }
            (Err(a), Err(b)) => {
                assert!(n > 100 && matches!(a, FormatError::Limit { .. }), "{a}");
                assert!(a.to_string().contains("values through shared"), "{a}");
                assert_eq!(a.to_string(), b.to_string());
            }
            (a, b) => panic!("{a:?} vs {b:?}"),
        }
        assert_eq!(borrowed.pids, values.pids, "{n} ids");
    }
}

#[test]
fn persistent_ids_go_to_the_host() {
    let mut host = TestHost { pids: vec![] };
    let p = b"\x80\x02(Pabc\nX\x03\x00\x00\x00defQl.";
    let out = run(p, &mut host, &Options::new("t")).unwrap();
    assert_eq!(host.pids, vec![s("abc"), s("def")]);
    assert_eq!(
        out.value,
        Value::List(vec![
            Value::List(vec![s("loaded")]),
            Value::Object {
                class: "torch.storage".into(),
                args: vec![i(7)],
                state: None
            }
        ])
    );
    // storage → _rebuild_tensor_v2
    let mut host = TestHost { pids: vec![s("x")] };
    let p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00sQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89}tR.";
    let out = run(p, &mut host, &Options::new("t")).unwrap();
    assert_eq!(out.value, Value::Tensor(2));
    // plain pickles refuse persistent ids
    assert!(err(b"Pabc\n.").contains("persistent id"));
}

/// Records every tensor spec; storages come from `BINPERSID` as storage #3.
#[derive(Default)]
struct SpecHost {
    specs: Vec<TensorSpec>,
    grads: Vec<(usize, bool)>,
}

impl Host for SpecHost {
    fn persistent_load(&mut self, _pid: Value) -> Result<Loaded, HostError> {
        Ok(Loaded::Storage(3))
    }
    fn rebuild_tensor(&mut self, spec: TensorSpec) -> Result<usize, HostError> {
        self.specs.push(spec);
        Ok(self.specs.len() - 1)
    }
    fn set_requires_grad(&mut self, index: usize, rg: bool) {
        self.grads.push((index, rg));
    }
}

#[test]
fn rebuild_functions() {
    let storage = b"X\x01\x00\x00\x00sQ";
    let build = |func: &str, rest: &[u8]| {
        let mut p = b"\x80\x02".to_vec();
        p.extend_from_slice(format!("ctorch._utils\n{func}\n(").as_bytes());
        p.extend_from_slice(storage);
        p.extend_from_slice(rest);
        p.extend_from_slice(b"tR.");
        p
    };
    // _rebuild_tensor(storage, offset, size, stride): the old form
    let mut h = SpecHost::default();
    let p = build("_rebuild_tensor", b"K\x01K\x02K\x03\x86K\x01K\x02\x86");
    assert_eq!(
        run(&p, &mut h, &Options::new("t")).unwrap().value,
        Value::Tensor(0)
    );
    assert_eq!(
        h.specs[0],
        TensorSpec {
            storage: 3,
            storage_offset: 1,
            shape: vec![2, 3],
            strides: vec![1, 2],
            requires_grad: false,
            dtype: None
        }
    );
    // _rebuild_tensor_v3(..., requires_grad, hooks, dtype): explicit dtype
    let mut h = SpecHost::default();
    let p = build(
        "_rebuild_tensor_v3",
        b"K\x00K\x04\x85K\x01\x85\x88}ctorch\nfloat16\n",
    );
    run(&p, &mut h, &Options::new("t")).unwrap();
    assert_eq!(h.specs[0].dtype, Some(DType::F16));
    assert!(h.specs[0].requires_grad);
    // _rebuild_parameter_with_state(tensor, requires_grad, hooks, state)
    let mut h = SpecHost::default();
    let mut p = b"\x80\x02ctorch._utils\n_rebuild_parameter_with_state\n(".to_vec();
    p.extend_from_slice(&build("_rebuild_tensor_v2", b"K\x00))\x89}")[2..]);
    p.pop(); // the inner STOP
    p.extend_from_slice(b"\x88}}tR.");
    let out = run(&p, &mut h, &Options::new("t")).unwrap();
    assert_eq!(out.value, Value::Tensor(0));
    assert_eq!(h.grads, vec![(0, true)]);
    // _rebuild_from_type_v2(func, type, args, state) unwraps to func(*args)
    let mut h = SpecHost::default();
    let mut p = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_tensor_v2\nctorch\nTensor\n(".to_vec();
    p.extend_from_slice(storage);
    p.extend_from_slice(b"K\x00))\x89}t}tR.");
    assert_eq!(
        run(&p, &mut h, &Options::new("t")).unwrap().value,
        Value::Tensor(0)
    );
    assert!(out.findings.is_empty());
}

#[test]
fn tensor_arguments_are_checked() {
    let bad: [(&[u8], &str); 4] = [
        (b"(K\x00K\x02\x85K\x01\x85\x89}t", "expected a storage"),
        (
            b"(X\x01\x00\x00\x00sQJ\xff\xff\xff\xff)K\x01\x85\x89}t",
            "negative storage offset",
        ),
        (
            b"(X\x01\x00\x00\x00sQK\x00J\xff\xff\xff\xff\x85K\x01\x85\x89}t",
            "negative size",
        ),
        (
            b"(X\x01\x00\x00\x00sQK\x00K\x02\x85)\x89}t",
            "differ in length",
        ),
    ];
    for (args, msg) in bad {
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n".to_vec();
        p.extend_from_slice(args);
        p.extend_from_slice(b"R.");
        let mut host = TestHost { pids: vec![s("x")] };
        let e = run(&p, &mut host, &Options::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(msg), "{e}");
    }
    // too many dimensions
    let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00sQK\x00(".to_vec();
    p.extend(std::iter::repeat_n(b"K\x01".as_slice(), 65).flatten());
    p.extend_from_slice(b"t)\x89}tR.");
    let mut host = TestHost { pids: vec![s("x")] };
    let e = run(&p, &mut host, &Options::new("t"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("dimensions"), "{e}");
}

#[test]
fn errors_name_the_opcode_and_offset() {
    match parse_plain(b"\x80\x02\xfe.").unwrap_err() {
        FormatError::Pickle {
            offset,
            opcode,
            message,
        } => {
            assert_eq!(offset, 2);
            assert_eq!(opcode, Some(0xfe));
            assert!(
                message.contains("unknown opcode 0xfe at byte 2"),
                "{message}"
            );
        }
        e => panic!("{e}"),
    }
    match parse_plain(b"\x80\x02(K\x01K\x02u.").unwrap_err() {
        FormatError::Pickle {
            offset,
            opcode,
            message,
        } => {
            assert_eq!(offset, 7);
            assert_eq!(opcode, Some(op::SETITEMS));
            assert!(message.contains("stack underflow"), "{message}");
            assert!(message.contains("SETITEMS"), "{message}");
        }
        e => panic!("{e}"),
    }
    let e = err(b"\x80\x02(u.");
    assert!(
        e.contains("stack underflow") && e.contains("SETITEMS"),
        "{e}"
    );
    assert!(err(b"\x80\x02h\x05.").contains("memo key 5 not found"));
    assert!(err(b"\x80\x02j\x05\x00\x00\x00.").contains("LONG_BINGET"));
    assert!(err(b"\x80\x02.").contains("stack underflow"));
    assert!(err(b"\x80\x02K\x01").contains("no STOP"));
    assert!(err(b"\x80\x06K\x01.").contains("protocol 6"));
    assert!(err(b"\x80\x05\x97.").contains("out-of-band"));
    assert!(err(b"\x80\x05\x98.").contains("out-of-band"));
    assert!(err(b"\x80\x02K\x01)R.").contains("not callable"));
    assert!(err(b"\x80\x02K\x01]b.").contains("BUILD on a int"));
    assert!(err(b"\x80\x02K\x01K\x02a.").contains("append"));
    assert!(err(b"Idone").contains("newline"));
}

#[test]
fn every_truncation_is_an_error() {
    for case in all_cases() {
        for cut in 0..case.len() {
            assert!(parse_plain(&case[..cut]).is_err(), "prefix {cut} parsed");
        }
    }
}

#[test]
fn depth_bomb_is_bounded() {
    let n = 100_000;
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b']', n));
    p.extend(std::iter::repeat_n(b'a', n - 1));
    p.push(b'.');
    let e = parse_plain(&p).unwrap_err();
    assert!(
        matches!(
            e,
            FormatError::Limit {
                limit: Limit::Depth,
                max: 512,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("nested"), "{e}");
}

#[test]
fn memo_and_dup_bombs_are_bounded() {
    // t0 = []; t(k) = (t(k-1), t(k-1)): 2^60 values once expanded.
    let mut p = b"\x80\x02]q\x00".to_vec();
    for k in 1..=60u8 {
        p.extend_from_slice(&[b'h', k - 1, b'2', 0x86, b'q', k]);
    }
    p.push(b'.');
    let start = std::time::Instant::now();
    let e = parse_plain(&p).unwrap_err();
    assert!(matches!(e, FormatError::Limit { .. }), "{e}");
    assert!(start.elapsed().as_secs() < 10);
    // the same through a persistent id (materialised for the host) is bounded too
    let mut p2 = p[..p.len() - 1].to_vec();
    p2.extend_from_slice(b"Q.");
    let mut host = TestHost { pids: vec![] };
    let mut small = Options::new("t");
    small.max_values = 10_000;
    let e = run(&p2, &mut host, &small).unwrap_err();
    assert!(matches!(e, FormatError::Limit { .. }), "{e}");
    assert!(host.pids.is_empty());
    // strings shared a million times exceed the byte budget
    let mut p = b"\x80\x02B\x00\x00\x10\x00".to_vec();
    p.extend(vec![b'x'; 1 << 20]);
    p.extend_from_slice(b"q\x00(");
    p.extend(std::iter::repeat_n(b"h\x00".as_slice(), 200).flatten());
    p.extend_from_slice(b"l.");
    let e = parse_plain(&p).unwrap_err();
    assert!(matches!(e, FormatError::Limit { .. }), "{e}");
    // the arena itself is capped
    let mut opts = Options::new("t");
    opts.max_values = 100;
    let e = run(BIG_P4, &mut PlainHost, &opts).unwrap_err();
    assert!(matches!(e, FormatError::Limit { .. }), "{e}");
}

#[test]
fn shared_small_ints_count_against_the_arena() {
    // 200 pushes of one small int: the arena limit counts each push, as before
    // small ints shared a node.
    let mut p = b"\x80\x02(".to_vec();
    p.extend(std::iter::repeat_n(b"K\x01".as_slice(), 200).flatten());
    p.extend_from_slice(b"l.");
    let mut opts = Options::new("t");
    opts.max_values = 100;
    let e = run(&p, &mut PlainHost, &opts).unwrap_err();
    assert!(
        e.to_string().contains("creates more than 100 values"),
        "{e}"
    );
    opts.max_values = 300;
    let out = run(&p, &mut PlainHost, &opts).unwrap();
    assert_eq!(out.value, Value::List(vec![i(1); 200]));
}

#[test]
fn reusing_a_big_memoised_value_is_bounded() {
    // One 5k-entry dict, then OrderedDict(d) rebuilt from it again and again:
    // each copy is cheap to encode (5 bytes) but copies the whole dict.
    let mut p = b"\x80\x02}q\x00(".to_vec();
    for k in 0..5_000u32 {
        p.push(b'J');
        p.extend_from_slice(&k.to_le_bytes());
        p.push(b'N');
    }
    p.extend_from_slice(b"u");
    p.extend_from_slice(b"ccollections\nOrderedDict\nq\x01");
    for _ in 0..2_000 {
        p.extend_from_slice(b"h\x01h\x00\x85R0");
    }
    p.extend_from_slice(b"N.");
    let start = std::time::Instant::now();
    let e = parse_plain(&p).unwrap_err();
    assert!(
        matches!(e, FormatError::Limit { limit: Limit::PickleWork, max, found, .. } if found > max),
        "{e}"
    );
    assert!(e.to_string().contains("copying work"), "{e}");
    assert!(start.elapsed().as_secs() < 10);
    // a huge name re-used by STACK_GLOBAL many times
    let mut p = b"\x80\x04\x8e\x00\x00\x10\x00\x00\x00\x00\x00".to_vec();
    p.extend(vec![b'x'; 1 << 20]);
    p.extend_from_slice(b"\x94");
    for _ in 0..10_000 {
        p.extend_from_slice(b"h\x00h\x00\x930");
    }
    p.extend_from_slice(b"N.");
    let e = parse_plain(&p).unwrap_err();
    assert!(
        e.to_string().contains("STACK_GLOBAL") || matches!(e, FormatError::Limit { .. }),
        "{e}"
    );
}

#[test]
fn cycles_are_errors_not_hangs() {
    let e = err(b"\x80\x02]q\x00h\x00a.");
    assert!(e.contains("cycle"), "{e}");
    let e = err(b"\x80\x02}q\x00K\x01h\x00s.");
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn escape_decoding() {
    assert_eq!(escape_decode(b"a\\tb\\\\c\\x4"), b"a\tb\\c\\x4".to_vec());
    assert_eq!(escape_decode(b"\\q\\"), b"\\q\\".to_vec());
    assert_eq!(raw_unicode_escape_decode(b"\\u00e9\\x"), "\u{e9}\\x");
    assert_eq!(f16_to_f64(0x3c00), 1.0);
    assert_eq!(f16_to_f64(0xc000), -2.0);
    assert!(f16_to_f64(0x7c00).is_infinite());
}
