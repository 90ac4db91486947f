"""pkg_config_library: a repository rule exposing Debian system libraries as one cc_library.

It runs `pkg-config --cflags --libs` for the listed modules on the build machine, symlinks each
include directory into the repository (Bazel only accepts in-repo include paths) and writes
`cc_library(name = "lib")`. It is `local = True` so a new machine re-resolves it.
"""

def _run_pkg_config(ctx, flag, modules):
    result = ctx.execute(["pkg-config", flag] + modules)
    if result.return_code != 0:
        fail("pkg-config %s %s failed (is the -dev package installed? ./deploy/install-deps.sh " % (flag, " ".join(modules)) +
             "installs them): " + result.stderr)
    return [f for f in result.stdout.strip().split(" ") if f]

def _pkg_config_library_impl(ctx):
    cflags = _run_pkg_config(ctx, "--cflags", ctx.attr.modules)
    # --as-needed (libdpdk.pc starts with it) drops a library the test binary itself does not
    # call, though the shared objects Bazel links tests from do: keep every listed library.
    libs = [f for f in _run_pkg_config(ctx, "--libs", ctx.attr.modules) if f != "-Wl,--as-needed"]

    includes = []
    defines = []
    copts = []
    for i, flag in enumerate(cflags):
        if flag.startswith("-I"):
            path = flag[2:]
            link = "inc%d" % i
            ctx.symlink(path, link)
            includes.append(link)
        elif flag.startswith("-D"):
            defines.append(flag[2:])
        else:
            copts.append(flag)

    ctx.file("BUILD.bazel", """
cc_library(
    name = "lib",
    includes = {includes},
    hdrs = glob(["inc*/**/*.h", "inc*/**/*.hpp", "inc*/**/*.inc"], allow_empty = True),
    defines = {defines},
    copts = {copts},
    linkopts = {linkopts},
    visibility = {visibility},
)
""".format(
        visibility = repr(ctx.attr.visibility_to),
        includes = repr(includes),
        defines = repr(defines),
        copts = repr(copts),
        linkopts = repr(libs + ctx.attr.extra_linkopts),
    ))

pkg_config_library = repository_rule(
    implementation = _pkg_config_library_impl,
    attrs = {
        "modules": attr.string_list(mandatory = True),
        "extra_linkopts": attr.string_list(default = []),
        # Who may depend on the library (labels of the main repository start with "@//").
        "visibility_to": attr.string_list(default = ["//visibility:public"]),
    },
    local = True,
)
