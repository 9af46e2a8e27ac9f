"""Calls to the GEMM micro-kernel: each `dlc.ukernel = "gemm"` declaration
(passes/lowering/utils/ukernel_calls.py) becomes a generated GEMM (ukernels.py), generated
once per spec, and each call runs it in place or split over the thread pool: a tm x tn grid of
C's row blocks and column panels (`thread_grid`), or a convolution's im2col items (im2col.py).

As IREE's ukernel calls, but the micro-kernel is specialised for its static sizes at compile
time instead of being a library function.
"""

from __future__ import annotations

import math

from llvmlite import ir
from xdsl.dialects import func
from xdsl.ir import Operation

from dialects.gemm_ukernel import GemmSpec, gemm_spec, runs_serially, thread_grids
from dlc.codegen.emitter_base import EmitterBase
from dlc.codegen.im2col import Im2colSpec, counted_loop, im2col_function
from dlc.codegen.llvm_types import I64, PTR
from dlc.codegen.runtime_abi import PARALLEL_TYPE, WORKER_TYPE, indirect_call, slot
from dlc.codegen.ukernels import emit_gemm
from dlc.errors import CompileError
from passes.target_info import target_info

# Thread counts the GEMM work grids are tabulated for (more threads share the last grid).
GRID_TABLE_THREADS = 64
# A loop body's GEMM on one thread walks B's panels forward on one call and backward on the
# next, so the panels it read last are still in L2/L1 when the next iteration starts: an LSTM's
# step reads its 1 MiB R^T per step, a core's whole L2 (benchmarks/README.md "Native loops":
# LSTM and GRU 5-9% faster). Off for benchmarks/native_loops.py's A/B.
ALTERNATE_PANELS = True


class GemmCalls(EmitterBase):
    """Generates the micro-kernels the module declares and emits the calls to them."""

    ukernels: dict[str, tuple]  # declaration name -> (GemmSpec, function, worker, im2col)
    ukernel_by_spec: dict[object, tuple[ir.Function, ir.Function]]
    gemm_by_spec: dict[GemmSpec, ir.Function]  # one GEMM per spec, whoever calls it
    loop_body_symbols: set[str]  # the functions and micro-kernels of Loop bodies (dialects/loop.py)

    def _ukernel(self, f: func.FuncOp) -> ir.Function:
        """Generate the micro-kernel a `dlc.ukernel` declaration specifies."""
        kind = f.attributes["dlc.ukernel"].data
        if kind != "gemm":
            raise NotImplementedError(f"llvm emitter: unknown micro-kernel kind '{kind}'")
        fields = gemm_spec(f)
        if fields.pop("b_trans", 0) and fields.get("b_layout") != "packed":
            raise ValueError(f"llvm emitter: @{f.sym_name.data} reads a transposed B that was not "
                             "packed (run pack-weights)")
        fields["accumulate"] = bool(fields.get("accumulate", 0))
        fields["residual"] = bool(fields.get("residual", 0))
        fields["c_transposed"] = bool(fields.get("c_transposed", 0))
        # Tiles left out of the IR (tile-contractions sets them all) are chosen as it would.
        info = target_info(self.module)
        spec = GemmSpec(**fields, vector_width=self.vector_width, l1_bytes=info.l1_bytes,
                        l2_bytes=info.l2_bytes)
        conv = None
        if "dlc.im2col" in f.attributes:
            conv = {key: value.value.data for key, value in f.attributes["dlc.im2col"].data.items()}
        key = (spec, tuple(sorted(conv.items())) if conv else None)
        # Models repeat layer shapes (ResNet-50: 54 GEMMs, 21 distinct): generate each once,
        # and each GEMM once for all the convolutions (geometries, grids) that use it.
        if key not in self.ukernel_by_spec:
            if spec not in self.gemm_by_spec:
                self.gemm_by_spec[spec] = emit_gemm(self.llvm, f.sym_name.data, spec)
            function = self.gemm_by_spec[spec]
            if conv is None:
                worker = self._parallel_worker(function.name, spec)
            elif conv.get("shared"):
                worker = self._shared_im2col_workers(f.sym_name.data, function.name, spec, conv,
                                                     len(self.ukernel_by_spec))
            else:
                worker = self._im2col_worker(f.sym_name.data, function.name, spec, conv, len(self.ukernel_by_spec))
            self.ukernel_by_spec[key] = (function, worker)
        function, worker = self.ukernel_by_spec[key]
        self.ukernels[f.sym_name.data] = (spec, function, worker, conv)
        return function

    def _im2col_worker(self, symbol: str, name: str, spec, conv: dict, index: int) -> ir.Function:
        """`void NAME_conv(ptr data, i64 item)` for a convolution whose B is im2col of its padded
        input (`dlc.im2col`, passes/lowering/rules/conv.py): item i is row part i % tm and
        column part i / tm of C; it builds its columns, `width` at a time, in its own block of
        the scratch buffer (so they are in this core's L2) and multiplies each block at once.

        `data` holds {A, padded input, C, bias, R, scratch}.
        """
        geometry = Im2colSpec(**{f: conv[f] for f in Im2colSpec.__dataclass_fields__})
        tm, tn, width = conv["tm"], conv["tn"], conv["width"]
        if not spec.nr <= width <= spec.ldb or geometry.depth != spec.k:
            raise CompileError(f"@{symbol}: an im2col block of {width} columns cannot hold a panel of nr={spec.nr} "
                               f"(depth {geometry.depth}, k {spec.k})", "choose nr <= the block width")
        im2col = im2col_function(self.llvm, geometry, spec.nr)  # shared by the convolutions like it
        worker = ir.Function(self.llvm, WORKER_TYPE, f"{name}_conv{index}")
        worker.linkage = "internal"
        worker.attributes.add("nounwind")
        # One copy serves the pool and the in-turn loop: inlined there too, LLVM optimised its
        # im2col twice (ResNet-50 compiled in 9.3 s instead of 6.2 s for two threads).
        worker.attributes.add("noinline")
        b = ir.IRBuilder(worker.append_basic_block("entry"))
        data, item = worker.args

        def const(value: int) -> ir.Constant:
            return ir.Constant(I64, value)

        def minimum(x, y):
            return b.select(b.icmp_signed("<", x, y), x, y)

        a, padded, c, bias, residual, scratch = [b.load(slot(b, data, i), typ=PTR, align=8) for i in range(6)]
        row_part, col_part = b.urem(item, const(tm)), b.udiv(item, const(tm))
        first_block = b.sdiv(b.mul(row_part, const(spec.row_blocks)), const(tm))
        last_block = b.sdiv(b.mul(b.add(row_part, const(1)), const(spec.row_blocks)), const(tm))
        first_row = b.mul(first_block, const(spec.mr))
        last_row = minimum(b.mul(last_block, const(spec.mr)), const(spec.m))
        per_part = -(-spec.panels // tn)
        first_panel = b.mul(col_part, const(per_part))
        last_panel = minimum(b.add(first_panel, const(per_part)), const(spec.panels))
        block = b.gep(scratch, [b.mul(item, const(spec.k * spec.ldb))], inbounds=True, source_etype=ir.FloatType())
        range_fn = self.llvm.globals[f"{name}_range"]
        step = width // spec.nr  # panels per block

        def column_block(panel):
            end_panel = minimum(b.add(panel, const(step)), last_panel)
            j0 = b.mul(panel, const(spec.nr))
            j1 = minimum(b.mul(end_panel, const(spec.nr)), const(spec.n))
            b.call(im2col, [padded, block, j0, j1, *geometry.arguments()])
            b.call(range_fn, [a, block, c, bias, residual, panel, end_panel, first_row, last_row])

        counted_loop(b, first_panel, last_panel, column_block, step)
        b.ret_void()
        return worker

    def _shared_im2col_workers(self, symbol: str, name: str, spec, conv: dict,
                               index: int) -> tuple[ir.Function, ir.Function, int]:
        """(pack, multiply, pack items) for a convolution whose grid has several row parts
        (`shared` in its `dlc.im2col`, passes/lowering/rules/conv.py): `NAME_pack{index}` item i
        builds panel i % panels of the whole im2col, channels [c0, c1) of range i / panels, into
        the scratch buffer (panel p at p * depth * nr: the layout one call over all columns
        writes); then `NAME_shared{index}` item i multiplies row part i % tm by column part
        i / tm of that one buffer. Within one panel the rows of a channel range are contiguous,
        so channel ranges split the packing when there are fewer panels than threads.

        `data` holds {A, padded input, C, bias, R, scratch}, as `_im2col_worker`'s.
        """
        geometry = Im2colSpec(**{f: conv[f] for f in Im2colSpec.__dataclass_fields__})
        tm, tn = conv["tm"], conv["tn"]
        if geometry.depth != spec.k:
            raise CompileError(f"@{symbol}: im2col depth {geometry.depth} is not the GEMM's k {spec.k}")
        im2col = im2col_function(self.llvm, geometry, spec.nr)
        ranges = max(1, min(geometry.channels, tm * tn // spec.panels))
        taps = geometry.kh * geometry.kw

        def new_worker(suffix: str) -> tuple[ir.Function, ir.IRBuilder, list[ir.Value], ir.Value]:
            worker = ir.Function(self.llvm, WORKER_TYPE, f"{name}_{suffix}{index}")
            worker.linkage = "internal"
            worker.attributes.add("nounwind")
            worker.attributes.add("noinline")  # one copy for the pool and the in-turn loop
            b = ir.IRBuilder(worker.append_basic_block("entry"))
            data, item = worker.args
            return worker, b, [b.load(slot(b, data, i), typ=PTR, align=8) for i in range(6)], item

        const = lambda value: ir.Constant(I64, value)  # noqa: E731

        def floats(b, base, offset):
            return b.gep(base, [offset], inbounds=True, source_etype=ir.FloatType())

        pack, b, (_, padded, _, _, _, scratch), item = new_worker("pack")
        panel, channel_range = b.urem(item, const(spec.panels)), b.udiv(item, const(spec.panels))
        c0 = b.sdiv(b.mul(channel_range, const(geometry.channels)), const(ranges))
        c1 = b.sdiv(b.mul(b.add(channel_range, const(1)), const(geometry.channels)), const(ranges))
        j0 = b.mul(panel, const(spec.nr))
        j1 = b.select(b.icmp_signed("<", b.add(j0, const(spec.nr)), const(spec.n)), b.add(j0, const(spec.nr)),
                      const(spec.n))
        source = floats(b, padded, b.mul(c0, const(geometry.hp * geometry.wp)))
        target = floats(b, scratch, b.add(b.mul(panel, const(spec.k * spec.nr)), b.mul(c0, const(taps * spec.nr))))
        channels, *rest = geometry.arguments()
        b.call(im2col, [source, target, j0, j1, b.sub(c1, c0), *rest])
        b.ret_void()

        multiply, b, (a, _, c, bias, residual, scratch), item = new_worker("shared")
        row_part, col_part = b.urem(item, const(tm)), b.udiv(item, const(tm))
        first_block = b.sdiv(b.mul(row_part, const(spec.row_blocks)), const(tm))
        last_block = b.sdiv(b.mul(b.add(row_part, const(1)), const(spec.row_blocks)), const(tm))
        first_row = b.mul(first_block, const(spec.mr))
        last_row = b.mul(last_block, const(spec.mr))
        last_row = b.select(b.icmp_signed("<", last_row, const(spec.m)), last_row, const(spec.m))
        first_panel = b.sdiv(b.mul(col_part, const(spec.panels)), const(tn))
        last_panel = b.sdiv(b.mul(b.add(col_part, const(1)), const(spec.panels)), const(tn))
        block = floats(b, scratch, b.mul(first_panel, const(spec.k * spec.nr)))
        b.call(self.llvm.globals[f"{name}_range"],
               [a, block, c, bias, residual, first_panel, last_panel, first_row, last_row])
        b.ret_void()
        return pack, multiply, spec.panels * ranges

    def _parallel_worker(self, name: str, spec) -> ir.Function:
        """`void NAME_worker(ptr data, i64 item)`: item i of a tm x tn grid over C
        (`thread_grid`: mr-row blocks split tm ways, nr-column panels tn ways) runs its block.

        `data` holds {A, B, C, bias, R, tm}; item i is row part i % tm of column part i / tm.
        """
        worker = ir.Function(self.llvm, WORKER_TYPE, f"{name}_worker")
        worker.linkage = "internal"
        worker.attributes.add("nounwind")
        b = ir.IRBuilder(worker.append_basic_block("entry"))
        data, item = worker.args

        def const(value: int) -> ir.Constant:
            return ir.Constant(I64, value)

        pointers = [b.load(slot(b, data, i), typ=PTR, align=8) for i in range(5)]
        tm = b.load(slot(b, data, 5), typ=I64, align=8)
        tn = b.udiv(self._thread_grid_items(b, data), tm)
        row_part, col_part = b.urem(item, tm), b.udiv(item, tm)
        blocks, panels = const(spec.row_blocks), const(spec.panels)

        def share(part, parts, total):  # [part*total/parts, (part+1)*total/parts): even shares
            return (b.sdiv(b.mul(part, total), parts),
                    b.sdiv(b.mul(b.add(part, const(1)), total), parts))

        first_panel, last_panel = share(col_part, tn, panels)
        first_block, last_block = share(row_part, tm, blocks)
        first_row = b.mul(first_block, const(spec.mr))
        last_row = b.mul(last_block, const(spec.mr))
        last_row = b.select(b.icmp_signed("<", last_row, const(spec.row_extent)), last_row, const(spec.row_extent))
        b.call(self.llvm.globals[f"{name}_range"], [*pointers, first_panel, last_panel, first_row, last_row])
        b.ret_void()
        return worker

    @staticmethod
    def _thread_grid_items(b: ir.IRBuilder, data: ir.Value) -> ir.Value:
        """tm * tn, the grid's item count, stored after tm in a GEMM worker's data."""
        return b.load(slot(b, data, 6), typ=I64, align=8)

    def _thread_grid_of(self, b: ir.IRBuilder, spec, threads: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(tm, tn) of `thread_grid` for `threads`, read from a table made at compile time for
        1..GRID_TABLE_THREADS threads (more threads use the last entry)."""
        table_name = (f"dlc_grid_{spec.row_blocks}x{spec.panels}_{spec.mr}x{spec.nr}x{spec.k}"
                      f"{'_rows' if spec.split_rows else ''}")
        if table_name in self.llvm.globals:
            table = self.llvm.globals[table_name]
        else:
            entries = thread_grids(spec.row_blocks, spec.panels, GRID_TABLE_THREADS, mr=spec.mr, nr=spec.nr,
                                   k=spec.k, rows_only=spec.split_rows)
            typ = ir.ArrayType(I64, 2 * GRID_TABLE_THREADS)
            table = ir.GlobalVariable(self.llvm, typ, table_name)
            table.initializer = ir.Constant(typ, [v for entry in entries for v in entry])
            table.global_constant = True
            table.linkage = "internal"
        most = ir.Constant(I64, GRID_TABLE_THREADS)
        index = b.sub(b.select(b.icmp_signed("<", threads, most), threads, most), ir.Constant(I64, 1))
        index = b.select(b.icmp_signed("<", index, ir.Constant(I64, 0)), ir.Constant(I64, 0), index)

        def entry(offset: int) -> ir.Value:
            slot = b.add(b.mul(index, ir.Constant(I64, 2)), ir.Constant(I64, offset))
            return b.load(b.gep(table, [ir.Constant(I64, 0), slot], True, source_etype=table.value_type),
                          typ=I64, align=8)

        return entry(0), entry(1)

    def _call_ukernel(self, op: Operation) -> None:
        """Call a micro-kernel: serially, or split over the runtime's threads."""
        spec, function, worker, conv = self.ukernels[op.callee.root_reference.data]
        b = self.builder
        pointers = [self._element_pointer(v, []) for v in op.operands]
        if conv is not None:
            scratch = op.operands[-1].type.get_shape()
            if conv.get("shared") and scratch[0] < spec.k * spec.panels * spec.nr:
                raise CompileError(f"@{op.callee.root_reference.data}: a shared im2col of {spec.panels} panels of "
                                   f"nr={spec.nr} needs {spec.k * spec.panels * spec.nr} floats of scratch, "
                                   f"it has {scratch[0]}", "choose nr <= the widest register tile")
            self._call_conv_worker(worker, pointers, spec, conv)
            return
        args = pointers[:3]
        cursor = 3
        for present in (spec.bias is not None, spec.residual):
            if present:
                args.append(pointers[cursor])
                cursor += 1
            else:
                args.append(ir.Constant(PTR, None))
        batch = self._batch_of(op.callee.root_reference.data)
        if batch is not None:
            self._batched_gemm(spec, function, worker, args, batch)
            return
        if runs_serially(spec.row_blocks, spec.panels, mr=spec.mr, nr=spec.nr, k=spec.k):
            self._serial_gemm(op.callee.root_reference.data, spec, function, args)
            return
        threads, parallel, serial = self._pool()
        with b.if_else(serial) as (then, otherwise):
            with then:
                self._serial_gemm(op.callee.root_reference.data, spec, function, args)
            with otherwise:
                tm, tn = self._thread_grid_of(b, spec, threads)
                items = b.mul(tm, tn)
                data = self._entry_alloca(ir.ArrayType(I64, 7), "gemm_data", 8)
                for i, value in enumerate([*args, tm, items]):
                    b.store(value, slot(b, data, i), align=8)
                indirect_call(b, parallel, PARALLEL_TYPE, [worker, data, items])

    def _pool(self) -> tuple[ir.Value, ir.Value, ir.Value]:
        """(the run's thread count, its `parallel` entry, whether to run in turn here: one
        thread, or no pool)."""
        b = self.builder
        threads = self.runtime_field("num_threads")
        parallel = self.runtime_field("parallel")
        serial = b.or_(b.icmp_signed("<=", threads, ir.Constant(I64, 1)),
                       b.icmp_unsigned("==", parallel, ir.Constant(PTR, None)))
        return threads, parallel, serial

    def _in_turn_or_on_pool(self, in_turn, on_pool) -> None:
        """Emit `in_turn()` inside a loop threads share, else a branch at run time: `in_turn()`
        on one thread or without a pool, `on_pool(threads, parallel)` otherwise."""
        if self.in_parallel_loop:
            in_turn()
            return
        threads, parallel, serial = self._pool()
        with self.builder.if_else(serial) as (then, otherwise):
            with then:
                in_turn()
            with otherwise:
                on_pool(threads, parallel)

    def _batch_of(self, symbol: str) -> dict[str, int] | None:
        """A batched GEMM declaration's {count, a, b, c} (`dlc.batch`: `count` GEMMs, item i's A,
        B and C i * a, b, c elements on), or None."""
        declarations = getattr(self, "_declarations", None)
        if declarations is None:
            declarations = self._declarations = {f.sym_name.data: f for f in self.module.ops
                                                 if isinstance(f, func.FuncOp)}
        declaration = declarations.get(symbol)
        if declaration is None or "dlc.batch" not in declaration.attributes:
            return None
        return {key: value.value.data for key, value in declaration.attributes["dlc.batch"].data.items()}

    def _batched_gemm(self, spec, function: ir.Function, worker: ir.Function, args: list[ir.Value],
                      batch: dict[str, int]) -> None:
        """`count` GEMMs of one spec (Winograd's 16, winograd.py) in one parallel region: each
        GEMM's grid is `thread_grid`'s for `share` threads, and a trampoline (`_batch_worker`)
        sends item j of GEMM i to the GEMM's worker with GEMM i's pointers. In turn on one
        thread (or inside a loop threads share).

        `share` is threads / gcd(threads, count), so that count x share items (of about
        1 / share of a GEMM each) divide evenly among the threads: 16 GEMMs on 12 threads as
        16 items ran in two waves of whole GEMMs (12 busy, then 4), as 48 items of a third each
        every thread takes four (the pool hands items to whichever thread asks first); F(4x4)'s
        36 on 16 threads take 4 threads each, 144 items, nine a thread. With threads a multiple
        of count, it is threads / count. Read from a table for 1..GRID_TABLE_THREADS threads,
        ceil(threads / count) beyond."""
        b = self.builder
        count = batch["count"]
        width = {"f32": 4}[spec.dtype]

        def pointers(index: ir.Value) -> list[ir.Value]:
            moved = [b.gep(pointer, [b.mul(index, ir.Constant(I64, batch[key] * width))], inbounds=True,
                           source_etype=ir.IntType(8)) for pointer, key in zip(args[:3], "abc")]
            return [*moved, *args[3:]]

        def in_turn():
            counted_loop(b, ir.Constant(I64, 0), ir.Constant(I64, count), lambda i: b.call(function, pointers(i)))

        def on_pool(threads, parallel):
            share = self._batch_share(threads, count)
            tm, tn = self._thread_grid_of(b, spec, share)
            items = b.mul(tm, tn)
            data = self._entry_alloca(ir.ArrayType(I64, 1 + 7 * count), "gemm_batch_data", 8)
            b.store(items, slot(b, data, 0), align=8)
            for i in range(count):
                for j, value in enumerate([*pointers(ir.Constant(I64, i)), tm, items]):
                    b.store(value, slot(b, data, 1 + 7 * i + j), align=8)
            indirect_call(b, parallel, PARALLEL_TYPE,
                          [self._batch_worker(worker), data, b.mul(items, ir.Constant(I64, count))])

        self._in_turn_or_on_pool(in_turn, on_pool)

    def _batch_share(self, threads: ir.Value, count: int) -> ir.Value:
        """threads / gcd(threads, count) from a table for 1..GRID_TABLE_THREADS threads,
        ceil(threads / count) beyond (`_batched_gemm`)."""
        b = self.builder
        name = f"dlc_batch_share_{count}"
        if name in self.llvm.globals:
            table = self.llvm.globals[name]
        else:
            typ = ir.ArrayType(I64, GRID_TABLE_THREADS)
            table = ir.GlobalVariable(self.llvm, typ, name)
            table.initializer = ir.Constant(typ, [t // math.gcd(t, count) for t in range(1, GRID_TABLE_THREADS + 1)])
            table.global_constant = True
            table.linkage = "internal"
        most = ir.Constant(I64, GRID_TABLE_THREADS)
        inside = b.icmp_signed("<=", threads, most)
        index = b.sub(b.select(inside, threads, most), ir.Constant(I64, 1))
        listed = b.load(b.gep(table, [ir.Constant(I64, 0), index], True, source_etype=table.value_type),
                        typ=I64, align=8)
        beyond = b.sdiv(b.add(threads, ir.Constant(I64, count - 1)), ir.Constant(I64, count))
        return b.select(inside, listed, beyond)

    def _batch_worker(self, worker: ir.Function) -> ir.Function:
        """`void W_batch(ptr data, i64 item)`: item j * items + k runs item k of GEMM j with GEMM
        j's seven slots (data holds items, then seven slots a GEMM)."""
        name = f"{worker.name}_batch"
        if name in self.llvm.globals:
            return self.llvm.globals[name]
        trampoline = ir.Function(self.llvm, WORKER_TYPE, name)
        trampoline.linkage = "internal"
        trampoline.attributes.add("nounwind")
        b = ir.IRBuilder(trampoline.append_basic_block("entry"))
        data, item = trampoline.args
        items = b.load(slot(b, data, 0), typ=I64, align=8)
        gemm, inner = b.udiv(item, items), b.urem(item, items)
        own = b.gep(data, [b.add(ir.Constant(I64, 1), b.mul(gemm, ir.Constant(I64, 7)))], True, source_etype=I64)
        b.call(worker, [own, inner])
        b.ret_void()
        return trampoline

    def _serial_gemm(self, symbol: str, spec, function: ir.Function, args: list[ir.Value]) -> None:
        """Run a GEMM on this thread: in a loop body (`ALTERNATE_PANELS`), its panels in
        alternate order from one call to the next, else all at once.

        The order is a flag of this call site, flipped by each call (relaxed atomics: two
        threads running the model at once each see a valid order; the order changes no
        result, each panel writes its own columns of C). So from one iteration to the next the
        panels read last are read first again, while they are still in cache."""
        b = self.builder
        if not ALTERNATE_PANELS or spec.panels < 2 or symbol not in self.loop_body_symbols:
            b.call(function, args)
            return
        byte = ir.IntType(8)
        flag = ir.GlobalVariable(self.llvm, byte, self.llvm.get_unique_name(f"{function.name}_backward"))
        flag.initializer = ir.Constant(byte, 0)
        flag.linkage = "internal"
        backward = b.load_atomic(flag, "monotonic", 1, typ=byte)
        b.store_atomic(b.xor(backward, ir.Constant(byte, 1)), flag, "monotonic", 1)
        with b.if_else(b.icmp_unsigned("!=", backward, ir.Constant(byte, 0))) as (then, otherwise):
            with then:
                range_fn = self.llvm.globals[f"{function.name}_range"]
                last, one = ir.Constant(I64, spec.panels - 1), ir.Constant(I64, 1)

                def panel(i: ir.Value) -> None:
                    p = b.sub(last, i)
                    b.call(range_fn, [*args, p, b.add(p, one), ir.Constant(I64, 0), ir.Constant(I64, spec.row_extent)])

                counted_loop(b, ir.Constant(I64, 0), ir.Constant(I64, spec.panels), panel)
            with otherwise:
                b.call(function, args)

    def _call_conv_worker(self, worker: ir.Function, pointers: list[ir.Value], spec, conv: dict) -> None:
        """Run an im2col convolution's tm x tn items (`_im2col_worker`) on the pool, or in turn."""
        b = self.builder
        a, padded, c, *rest = pointers
        bias = rest.pop(0) if spec.bias is not None else ir.Constant(PTR, None)
        residual = rest.pop(0) if spec.residual else ir.Constant(PTR, None)
        (scratch,) = rest
        data = self._entry_alloca(ir.ArrayType(I64, 6), "conv_data", 8)
        for i, value in enumerate([a, padded, c, bias, residual, scratch]):
            b.store(value, slot(b, data, i), align=8)
        items = ir.Constant(I64, conv["tm"] * conv["tn"])
        # A shared im2col is built by one region of workers, then multiplied by a second.
        steps = [(worker[0], ir.Constant(I64, worker[2])), (worker[1], items)] if conv.get("shared") \
            else [(worker, items)]

        def in_turn():
            for step_worker, step_items in steps:
                counted_loop(b, ir.Constant(I64, 0), step_items,
                             lambda i, step_worker=step_worker: b.call(step_worker, [data, i]))

        def on_pool(_threads, parallel):
            for step_worker, step_items in steps:
                indirect_call(b, parallel, PARALLEL_TYPE, [step_worker, data, step_items])

        if conv["tm"] * conv["tn"] == 1:
            in_turn()
        else:
            self._in_turn_or_on_pool(in_turn, on_pool)

