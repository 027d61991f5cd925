// libzstd (Debian libzstd-dev), for split streams' compressed sections.
#include <zstd.h>
