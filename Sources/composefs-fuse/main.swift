// composefs-fuse: serve a composefs image read-only through FUSE, without privileges.
// Options and behaviour follow the reference composefs-fuse.

import ComposeFSFuse

#if canImport(Glibc)
import Glibc
#endif

exit(ComposefsFuse.main())
