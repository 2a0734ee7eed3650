{
  "targets": [
    {
      "target_name": "overpack_fuse3",
      "sources": ["overpack_fuse3.c"],
      "include_dirs": ["/usr/include/fuse3"],
      "libraries": ["-lfuse3", "-lm"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
