"""A trace's conditions on N, said together in words, and its formulas said
for the lengths they allow.  The truth of each case is worked out by hand
in the test."""
import sympy

from attncost.expr import B, N, condition_text, conditions_text, on_multiples, value_at


def test_conditions_that_ask_a_residue_together():
    # each alone is an odd condition; together: multiples of 16
    conditions = ["Eq(Mod(N, 8), 0)", "Ne(Mod(N, 16), 8)"]
    assert conditions_text(conditions, start=1) == "N a multiple of 16"


def test_conditions_that_hold_from_some_length_on():
    # multiples of 4, but not 4 itself (a size-1 block told apart)
    conditions = ["Eq(Mod(N, 4), 0)", "Ne(N, 4)"]
    assert conditions_text(conditions, start=1) == "N >= 8, N a multiple of 4"
    assert conditions_text(["Ne(N, 1)", "Ne(N, 2)"], start=1) == "N >= 3"


def test_conditions_that_allow_one_length_or_a_run():
    assert conditions_text(["Eq(floor(N/64), 2)", "Eq(Mod(N, 64), 0)"], start=128) == \
        "N = 128 only"
    assert conditions_text(["Eq(floor(N/64), 2)"], start=100) == "128 <= N <= 191"


def test_conditions_that_ask_nothing_or_many_things():
    assert conditions_text(["Ne(N, 0)"], start=1) is None
    many = [f"Ne(N, {k} * {k} + 3)" for k in range(1, 9)]
    text = conditions_text(many, start=1)
    assert text.endswith("and 6 more conditions on N") and "\n" not in text


def test_formulas_on_the_multiples_a_trace_holds_for():
    # Longformer-style sizes: N//8 chunks of N//(N//8) = 8 tokens
    chunks = sympy.floor(N / 8)
    width = sympy.floor(N / chunks)
    expr = 128 * B * chunks * width ** 2 + 2048 * B * chunks * width
    simpler = on_multiples(expr, 16)
    assert simpler == sympy.expand(128 * B * N / 8 * 64 + 2048 * B * N / 8 * 8)
    for n in (16, 32, 4096):
        assert value_at(simpler, n, 3) == value_at(expr, n, 3)
    # a floor the multiples do not resolve is left as it is
    thirds = sympy.floor(N / 3) * B
    assert on_multiples(thirds, 16) == thirds


def test_a_length_padded_to_blocks_reads_as_ceiling():
    # LongT5's local attention pads N to blocks of 9: the trace says the
    # blocks as floor(N/9 + Mod(8·N, 9)/9) and the padded block as
    # floor(N/blocks + Mod(8·N, 9)/blocks), which is 9
    from attncost.expr import padded_tidied

    blocks = sympy.floor(N / 9 + sympy.Mod(8 * N, 9) / 9)
    written = 384 * B * blocks * sympy.floor(N / blocks + sympy.Mod(8 * N, 9) / blocks) ** 2
    tidy = padded_tidied(written)
    assert tidy == 384 * 81 * B * sympy.ceiling(N / 9)
    for n in range(1, 200):
        assert value_at(tidy, n, 3) == value_at(written, n, 3) == 3 * 384 * 81 * -(-n // 9)
    # nothing to say more simply: left as it is
    assert padded_tidied(B * sympy.Mod(N, 16) + N) == B * sympy.Mod(N, 16) + N


def test_conditions_read_fast_agree_with_sympy():
    from attncost.expr import _parsed, holds_at

    conditions = ["Eq(Mod(N, 16), 0)", "N > 2048", "Eq(floor(N/9 + Mod(8*N, 9)/9), 8)",
                  "Ne(Mod(8*N, 9), 0)", "(N + 31)/32 >= 8", "Eq(ceiling(N/16)*16 - N, 0)",
                  "Eq(B*N, 6)", "Max(N, 5) > 7", "floor(N/3) < 4", "Ne(B, 1)",
                  "(N > 3) & (N < 9)",
                  # a multiple of a Mod: Python's % binds as * does
                  "Eq(64*Max(1, N - Mod(N, 3)), 64*N - 64*Mod(N, 3))", "Eq(N - 2*Mod(N, 3), 4)"]
    for condition in conditions:
        for n in range(1, 160):
            for b in (1, 2):
                exact = _parsed(condition).xreplace({N: sympy.Integer(n), B: sympy.Integer(b)})
                assert holds_at(condition, n, b) is bool(exact), (condition, n, b)


def test_a_shape_says_a_padded_length_as_ceiling_and_brackets_sums():
    from attncost.expr import shape_text

    # Longformer's length padded to its window of 512, cut into chunks of 256
    chunks = sympy.sympify("256*floor(N/256 + Mod(511*N, 512)/256)", locals={"N": N})
    assert shape_text([B, chunks, 4, 513]) == "B×512·ceiling(N/512)×4×513"
    assert shape_text([B, N + 1, N]) == "B×(N + 1)×N"
    assert shape_text([]) == "scalar"


def test_a_condition_that_divides_by_a_size_that_is_zero_does_not_hold():
    """A guard written with N // 4 as a divisor (a pooled grid's side) asks
    for a length where that size is not zero: at N=2 no trace runs."""
    from attncost.expr import holds_at

    condition = "Eq(Mod(N, floor(N/4)), 0)"
    assert holds_at(condition, 2) is False
    assert [n for n in range(4, 40) if holds_at(condition, n)] == \
        [n for n in range(4, 40) if n % (n // 4) == 0]


def test_a_length_ruled_out_inside_the_run_is_named():
    # a table built for 16 tokens is resized at every other length
    # (Ne(2·N - 1, 31)): multiples of 4 but 16, said as such
    conditions = ["Eq(Mod(N, 4), 0)", "Ne(2*N - 1, 31)"]
    assert conditions_text(conditions, start=1) == "N a multiple of 4, N ≠ 16"
    # one at the start of the run says where it begins instead
    assert conditions_text(conditions + ["Ne(N, 4)"], start=1) == \
        "N >= 8, N a multiple of 4, N ≠ 16"


def test_a_count_that_does_not_grow_with_n_bounds_nothing():
    # floor(N/ceiling(N/4)) is 4 at every multiple of 4 and 3 or less
    # between them: the guard that it is 4 asks a residue, not a run of lengths
    from attncost.tracing import _bounded

    ceiling_quarter = sympy.floor(N / 4 + sympy.Mod(3 * N, 4) / 4)
    guard = sympy.Eq(sympy.floor(N / ceiling_quarter), 4)
    assert [n for n in range(60, 70) if guard.subs(N, n)] == [60, 64, 68]
    assert _bounded(guard, 1, None, 64) == (1, None)
    # a count of chunks that grows with N does bound it: 8 chunks of 32
    chunks = sympy.floor(N / 32 + sympy.Mod(31 * N, 32) / 32)
    assert _bounded(sympy.Eq(chunks, 8), 1, None, 250) == (225, 256)


def test_one_length_ruled_out_and_nothing_else_is_named():
    # a trace whose one condition is that two sizes differ (2N − 64 ≠ N)
    assert conditions_text(["Ne(2*N - 64, N)"]) == "N ≠ 64"


def test_a_residue_kept_to_the_end_of_the_lengths_read_bounds_nothing_above():
    # multiples of 4 from 8 on, read on N = 4..259: the last multiple read is
    # 256, three short of the span's end, and no bound above follows from it
    conditions = ["Eq(Mod(N, 4), 0)", "floor(N/8) >= 1"]
    assert conditions_text(conditions, start=4) == "N >= 8, N a multiple of 4"


def test_a_condition_with_no_words_of_its_own_reads_as_a_relation():
    """A guard that compares N with B (a size equal to the batch told
    apart from the length) says so in symbols, not as sympy's ``Ne(N, B)``."""
    assert condition_text("Ne(N, B)") == "N ≠ B"
    assert condition_text("Eq(B*N, 6)") == "B*N = 6"
    assert condition_text("N > 2048") == "N > 2048"
