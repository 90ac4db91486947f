"""Offline stub: re-exports Bazel 4.2.3's native Java rules (see build-offline.md)."""

java_import = native.java_import
java_runtime = native.java_runtime
java_toolchain = native.java_toolchain
java_library = native.java_library
java_binary = native.java_binary
