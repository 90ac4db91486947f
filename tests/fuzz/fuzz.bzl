"""mm_fuzz_target: a libFuzzer target, and its corpus replayed as an ordinary test.

Built normally (gcc, and under --config=asan / --config=tsan in deploy/test.sh), the target links
replay_main.cc, and `<name>_corpus_test` runs every seed in corpus/<name>/ plus a few thousand
deterministic mutations of them. Built with --config=fuzz (clang, tests/fuzz/run.sh) it links
libFuzzer instead and explores on its own.
"""

def mm_fuzz_target(name, srcs, deps = [], copts = [], tags = []):
    driver = select({
        "//tests/fuzz:libfuzzer": [],
        "//conditions:default": ["//tests/fuzz:replay_main"],
    })
    native.cc_binary(
        name = name,
        testonly = True,
        srcs = srcs,
        copts = copts,
        deps = deps + driver,
        linkopts = select({
            "//tests/fuzz:libfuzzer": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        tags = tags,
    )
    native.cc_test(
        name = name + "_corpus_test",
        size = "small",
        srcs = srcs,
        copts = copts,
        deps = deps + ["//tests/fuzz:replay_main"],
        data = native.glob(["corpus/" + name + "/**"]),
        args = ["tests/fuzz/corpus/" + name],
        tags = tags,
    )
