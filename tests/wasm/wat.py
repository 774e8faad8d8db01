"""WASM nodes of the tests, written as WebAssembly text (compiled by wat2wasm at test time).

Every node shares ``RUNTIME``: a bump allocator (``$alloc``; the exported
``sabot_alloc`` starts a new batch by resetting it first), helpers that read
the ABI's batch descriptor, and ``sabot_error`` pointing at the last message. ``module(body)`` wraps a
node's ``sabot_run`` (and whatever else it defines) with it.
"""

RUNTIME = r"""
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (global $err (mut i32) (i32.const 0))
  (func (export "sabot_error") (result i32) (global.get $err))
  (func (export "sabot_alloc") (param $n i32) (result i32)
    (global.set $heap (i32.const 4096))
    (global.set $err (i32.const 0))
    (call $alloc (local.get $n)))
  (func $alloc (param $n i32) (result i32)
    (local $p i32) (local $end i32) (local $need i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (if (i32.lt_u (local.get $end) (local.get $p)) (then (return (i32.const 0))))
    (local.set $need (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535))
                                         (i32.const 16))
                              (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1))
              (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))
  ;; field $f (a u32 index, 0..9) of column $c of the batch at $b
  (func $col (param $b i32) (param $c i32) (param $f i32) (result i32)
    (i32.load (i32.add (i32.add (local.get $b) (i32.const 8))
                       (i32.add (i32.mul (local.get $c) (i32.const 40))
                                (i32.shl (local.get $f) (i32.const 2))))))
  (func $rows (param $b i32) (result i32) (i32.load (local.get $b)))
  ;; 1 if row $i of a column with validity bitmap $v (0: all valid) is valid
  (func $valid (param $v i32) (param $i i32) (result i32)
    (if (result i32) (i32.eqz (local.get $v))
      (then (i32.const 1))
      (else (i32.and (i32.shr_u (i32.load8_u (i32.add (local.get $v)
                                                      (i32.shr_u (local.get $i) (i32.const 3))))
                                (i32.and (local.get $i) (i32.const 7)))
                     (i32.const 1)))))
  ;; a one-column output descriptor: type, validity, values, data, name (copied from
  ;; column 0 of the input $b); returns its address
  (func $out1 (param $b i32) (param $rows i32) (param $type i32) (param $vp i32) (param $vl i32)
              (param $xp i32) (param $xl i32) (param $dp i32) (param $dl i32) (result i32)
    (local $o i32)
    (local.set $o (call $alloc (i32.const 48)))
    (i32.store (local.get $o) (local.get $rows))
    (i32.store offset=4 (local.get $o) (i32.const 1))
    (i32.store offset=8 (local.get $o) (local.get $type))
    (i32.store offset=12 (local.get $o) (i32.const 0))
    (i32.store offset=16 (local.get $o) (local.get $vp))
    (i32.store offset=20 (local.get $o) (local.get $vl))
    (i32.store offset=24 (local.get $o) (local.get $xp))
    (i32.store offset=28 (local.get $o) (local.get $xl))
    (i32.store offset=32 (local.get $o) (local.get $dp))
    (i32.store offset=36 (local.get $o) (local.get $dl))
    (i32.store offset=40 (local.get $o) (call $col (local.get $b) (i32.const 0) (i32.const 8)))
    (i32.store offset=44 (local.get $o) (call $col (local.get $b) (i32.const 0) (i32.const 9)))
    (local.get $o))
  (data (i32.const 16) "unsupported column type\00")
  (func $unsupported (result i32) (global.set $err (i32.const 16)) (i32.const 0))
"""


def module(body, imports=""):
    """A whole module: ``imports``, the shared runtime, then ``body``."""
    return f"(module {imports}\n{RUNTIME}\n{body})"


#: Sum of the valid values of column 0 (int64 or float64); one row, null
#: when no value is valid (pyarrow.compute.sum's answer).
SUM = module(r"""
  (func (export "sabot_run") (param $b i32) (param $p i32) (param $pl i32) (result i32)
    (local $t i32) (local $v i32) (local $x i32) (local $n i32) (local $i i32)
    (local $seen i32) (local $si i64) (local $sf f64) (local $res i32) (local $bits i32)
    (local.set $t (call $col (local.get $b) (i32.const 0) (i32.const 0)))
    (local.set $v (call $col (local.get $b) (i32.const 0) (i32.const 2)))
    (local.set $x (call $col (local.get $b) (i32.const 0) (i32.const 4)))
    (local.set $n (call $rows (local.get $b)))
    (if (i32.and (i32.ne (local.get $t) (i32.const 5)) (i32.ne (local.get $t) (i32.const 11)))
      (then (return (call $unsupported))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (if (call $valid (local.get $v) (local.get $i))
        (then
          (local.set $seen (i32.const 1))
          (if (i32.eq (local.get $t) (i32.const 5))
            (then (local.set $si (i64.add (local.get $si)
                    (i64.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 3)))))))
            (else (local.set $sf (f64.add (local.get $sf)
                    (f64.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 3))))))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (local.set $res (call $alloc (i32.const 16)))
    (if (i32.eq (local.get $t) (i32.const 5))
      (then (i64.store (local.get $res) (local.get $si)))
      (else (f64.store (local.get $res) (local.get $sf))))
    (local.set $bits (i32.add (local.get $res) (i32.const 8)))
    (i32.store8 (local.get $bits) (local.get $seen))
    (call $out1 (local.get $b) (i32.const 1) (local.get $t) (local.get $bits) (i32.const 1)
                (local.get $res) (i32.const 8) (i32.const 0) (i32.const 0)))
""")

#: The valid values of column 0 (int64 or float64) greater than zero
#: (pc.filter(col, pc.greater(col, 0)): nulls are dropped).
FILTER_POSITIVE = module(r"""
  (func (export "sabot_run") (param $b i32) (param $p i32) (param $pl i32) (result i32)
    (local $t i32) (local $v i32) (local $x i32) (local $n i32) (local $i i32)
    (local $out i32) (local $k i32) (local $at i32) (local $keep i32)
    (local.set $t (call $col (local.get $b) (i32.const 0) (i32.const 0)))
    (local.set $v (call $col (local.get $b) (i32.const 0) (i32.const 2)))
    (local.set $x (call $col (local.get $b) (i32.const 0) (i32.const 4)))
    (local.set $n (call $rows (local.get $b)))
    (if (i32.and (i32.ne (local.get $t) (i32.const 5)) (i32.ne (local.get $t) (i32.const 11)))
      (then (return (call $unsupported))))
    (local.set $out (call $alloc (i32.shl (local.get $n) (i32.const 3))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $at (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 3))))
      (local.set $keep (i32.const 0))
      (if (call $valid (local.get $v) (local.get $i))
        (then (if (i32.eq (local.get $t) (i32.const 5))
          (then (local.set $keep (i64.gt_s (i64.load (local.get $at)) (i64.const 0))))
          (else (local.set $keep (f64.gt (f64.load (local.get $at)) (f64.const 0)))))))
      (if (local.get $keep)
        (then
          (i64.store (i32.add (local.get $out) (i32.shl (local.get $k) (i32.const 3)))
                     (i64.load (local.get $at)))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $out1 (local.get $b) (local.get $k) (local.get $t) (i32.const 0) (i32.const 0)
                (local.get $out) (i32.shl (local.get $k) (i32.const 3)) (i32.const 0) (i32.const 0)))
""")

#: Byte length of each string of column 0 (utf8) as int32, null where the
#: string is null (pyarrow.compute.binary_length). The output's validity is
#: the input's bitmap, in place.
STRING_LENGTH = module(r"""
  (func (export "sabot_run") (param $b i32) (param $p i32) (param $pl i32) (result i32)
    (local $n i32) (local $off i32) (local $out i32) (local $i i32) (local $at i32)
    (if (i32.ne (call $col (local.get $b) (i32.const 0) (i32.const 0)) (i32.const 12))
      (then (return (call $unsupported))))
    (local.set $n (call $rows (local.get $b)))
    (local.set $off (call $col (local.get $b) (i32.const 0) (i32.const 4)))
    (local.set $out (call $alloc (i32.shl (local.get $n) (i32.const 2))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $at (i32.add (local.get $off) (i32.shl (local.get $i) (i32.const 2))))
      (i32.store (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 2)))
                 (i32.sub (i32.load offset=4 (local.get $at)) (i32.load (local.get $at))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $out1 (local.get $b) (local.get $n) (i32.const 4)
                (call $col (local.get $b) (i32.const 0) (i32.const 2))
                (call $col (local.get $b) (i32.const 0) (i32.const 3))
                (local.get $out) (i32.shl (local.get $n) (i32.const 2)) (i32.const 0) (i32.const 0)))
""")

#: The parameters' JSON as one utf8 value (named after column 0).
PARAMS_ECHO = module(r"""
  (func (export "sabot_run") (param $b i32) (param $p i32) (param $pl i32) (result i32)
    (local $off i32)
    (local.set $off (call $alloc (i32.const 8)))
    (i32.store (local.get $off) (i32.const 0))
    (i32.store offset=4 (local.get $off) (local.get $pl))
    (call $out1 (local.get $b) (i32.const 1) (i32.const 12) (i32.const 0) (i32.const 0)
                (local.get $off) (i32.const 8) (local.get $p) (local.get $pl)))
""")

#: Fails each call whose column 0 has a first int64 value of 13 (a clean
#: failure: sabot_run returns 0 with a message); echoes the batch otherwise.
FAIL_ON_13 = module(r"""
  (data (i32.const 64) "unlucky number\00")
  (func (export "sabot_run") (param $b i32) (param $p i32) (param $pl i32) (result i32)
    (if (i64.eq (i64.load (call $col (local.get $b) (i32.const 0) (i32.const 4))) (i64.const 13))
      (then (global.set $err (i32.const 64)) (return (i32.const 0))))
    (local.get $b))
""")

#: Loops forever when the first int64 of column 0 is 1; echoes the batch otherwise.
LOOP = module(r"""
  (func (export "sabot_run") (param $b i32) (param $p i32) (param $pl i32) (result i32)
    (if (i64.eq (i64.load (call $col (local.get $b) (i32.const 0) (i32.const 4))) (i64.const 1))
      (then (loop $forever (br $forever))))
    (local.get $b))
""")

#: Grows its memory until refused, then aborts (unreachable) when the first
#: int64 of column 0 is 1; echoes the batch otherwise.
BOMB = module(r"""
  (func (export "sabot_run") (param $b i32) (param $p i32) (param $pl i32) (result i32)
    (if (i64.eq (i64.load (call $col (local.get $b) (i32.const 0) (i32.const 4))) (i64.const 1))
      (then
        (block $refused (loop $grow
          (br_if $refused (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
          (br $grow)))
        unreachable))
    (local.get $b))
""")

#: Reads far outside its memory (a trap) when the first int64 of column 0
#: is 1; echoes the batch otherwise.
OUT_OF_BOUNDS = module(r"""
  (func (export "sabot_run") (param $b i32) (param $p i32) (param $pl i32) (result i32)
    (if (i64.eq (i64.load (call $col (local.get $b) (i32.const 0) (i32.const 4))) (i64.const 1))
      (then (return (i32.load (i32.const -16)))))
    (local.get $b))
""")

#: Returns a descriptor pointing far outside its memory (an ABI violation)
#: when the first int64 of column 0 is 1; echoes the batch otherwise.
BAD_POINTER = module(r"""
  (func (export "sabot_run") (param $b i32) (param $p i32) (param $pl i32) (result i32)
    (if (i64.eq (i64.load (call $col (local.get $b) (i32.const 0) (i32.const 4))) (i64.const 1))
      (then (i32.store offset=24 (local.get $b) (i32.const 0x7ffffff0))))
    (local.get $b))
""")

#: Opens the path in row 0 of column 0 (utf8) relative to the first
#: preopened directory (fd 3) with WASI's path_open; echoes the batch when
#: it opened, fails the call ("open failed") when WASI refused.
OPEN_FILE = module(r"""
  (data (i32.const 64) "open failed\00")
  (func (export "sabot_run") (param $b i32) (param $p i32) (param $pl i32) (result i32)
    (local $off i32) (local $start i32) (local $fd i32)
    (local.set $off (call $col (local.get $b) (i32.const 0) (i32.const 4)))
    (local.set $start (i32.load (local.get $off)))
    (local.set $fd (call $alloc (i32.const 4)))
    (if (call $path_open (i32.const 3) (i32.const 0)
                         (i32.add (call $col (local.get $b) (i32.const 0) (i32.const 6))
                                  (local.get $start))
                         (i32.sub (i32.load offset=4 (local.get $off)) (local.get $start))
                         (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0)
                         (local.get $fd))
      (then (global.set $err (i32.const 64)) (return (i32.const 0))))
    (local.get $b))
""", imports=r"""
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
""")

#: The number of environment variables the node sees (WASI
#: environ_sizes_get), as one int32 value named after column 0.
ENV_COUNT = module(r"""
  (func (export "sabot_run") (param $b i32) (param $p i32) (param $pl i32) (result i32)
    (local $counts i32)
    (local.set $counts (call $alloc (i32.const 8)))
    (drop (call $environ_sizes_get (local.get $counts)
                                   (i32.add (local.get $counts) (i32.const 4))))
    (call $out1 (local.get $b) (i32.const 1) (i32.const 4) (i32.const 0) (i32.const 0)
                (local.get $counts) (i32.const 4) (i32.const 0) (i32.const 0)))
""", imports=r"""
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
""")
