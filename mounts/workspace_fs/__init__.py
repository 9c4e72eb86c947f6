"""The only door to a workspace's content: every read, write, listing, walk, search, edit and
delete the agent does inside a workspace goes through this package.

Why one door, and why here: the mounts app already answers "where is a bucket's workspace";
this package answers "how may the agent, running as root, touch what is inside it". The files
API (mounts.files), the model's tools (workflows.tools), integration installs
(workflows.integrations.services) and the preview's start command (previews.services) call
these functions; none of them opens a workspace path itself. It grew out of the old
mounts.paths/mounts.files pair (which followed symlinks that stayed inside the workspace) and is
a package only for size: core.py (paths, openat2, errors), reading.py, writing.py; callers
import `mounts.workspace_fs` and nothing below it. Everything in a workspace is written by
code we do not trust: its names, its symlinks, its FIFOs, and it can change them while we
work (docs/security.md).

How each rule is kept:
- A path is checked lexically (relative, no `..`, no NUL), then resolved by the kernel with
  openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
  from a descriptor of the workspace root. A symlink anywhere on the way fails with ELOOP
  (`is_symlink`), a mount crossing with EXDEV; a directory swapped for a symlink mid-operation
  fails the same way. Nothing is resolved twice: later steps use descriptors and single names.
- A symlink is never read or written through: reads answer `is_symlink`, listings and walks
  report it as a symlink, a delete removes the link itself.
- Content is read from regular files only: the type comes from an O_PATH descriptor (opening
  one never opens a FIFO or a device), then that same inode is reopened for reading.
- Writes create a temporary file (O_CREAT|O_EXCL|O_NOFOLLOW) in the parent directory's
  descriptor, fchown it to the sandbox user, then renameat it onto the name in that same
  descriptor: the file is the sandbox user's before it has its name, and no half-written file
  is ever visible. New directories: mkdirat, then fchown on the directory's own descriptor.
  "Create only when absent" links the temporary file to the name (EEXIST, even for a dangling
  symlink): no exists()-then-write window.
- Walks recurse over descriptors opened O_DIRECTORY|O_NOFOLLOW, stay on the root's device and
  are bounded in depth.
"""

from mounts.workspace_fs.core import (
    JUICEFS_VIRTUAL,
    DirectoryNotEmpty,
    Entry,
    InvalidPath,
    IsSymlink,
    NotADirectory,
    NotAFile,
    PathNotFound,
    Written,
    clean,
    directory,
    kind_of,
)
from mounts.workspace_fs.reading import entries, open_file, read, read_if_present, texts, walk
from mounts.workspace_fs.writing import remove, write

__all__ = ["JUICEFS_VIRTUAL", "DirectoryNotEmpty", "Entry", "InvalidPath", "IsSymlink",
           "NotADirectory", "NotAFile", "PathNotFound", "Written", "clean", "directory",
           "entries", "kind_of", "open_file", "read", "read_if_present", "remove", "texts",
           "walk", "write"]
