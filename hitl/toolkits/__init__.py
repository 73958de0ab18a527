"""The built-in toolkits, written with the same public API as a user's tools.

`hitl.toolkits.files` (find_files, read_file, delete_files, write_file),
`hitl.toolkits.commands` (run_command) and `hitl.toolkits.email` (send_email). A worker
given no tools loads all three (`hitl.tools.BUILTIN_TOOLKITS`).
"""
