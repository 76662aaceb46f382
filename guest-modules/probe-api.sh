#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Usage: probe-api.sh SRCTREE
#
# Prints the macros (one line, space separated) that select the movable-page
# API of movable_sample.c for the kernel whose source headers live in SRCTREE.
# The API is chosen by what the headers declare, never by the version number,
# so a distribution kernel with a backport gets the API it really has. Kbuild
# turns each word into a -D flag; harness/module.py runs the same script to
# refuse an unsupported kernel before building.
#
#   MS_API_AOPS         4.8 .. 5.19: a_ops->isolate_page/migratepage/putback_page
#                       and __SetPageMovable(page, mapping)
#   MS_API_MOVABLE_OPS  6.0 .. 6.16: struct movable_operations and
#                       __SetPageMovable(page, ops)
#   MS_API_REMOVED      6.17 on: movable_operations exist but modules can no
#                       longer register pages (__SetPageMovable is gone)
#   MS_API_NONE         older than 4.8, or SRCTREE has no kernel headers
#   MS_HAVE_MIGRATE_SYNC_NO_COPY  the no-copy migrate mode exists (4.14 .. 6.9)
#   MS_HAVE_KMAP_LOCAL_PAGE       kmap_local_page() exists (5.11 on)

inc="$1/include/linux"

has() {
	grep -qsF -- "$1" "$2"
}

if has 'struct movable_operations {' "$inc/migrate.h"; then
	if has '__SetPageMovable(' "$inc/migrate.h" &&
	   has '__ClearPageMovable(' "$inc/migrate.h"; then
		api=MS_API_MOVABLE_OPS
	else
		api=MS_API_REMOVED
	fi
elif has '(*isolate_page)(struct page' "$inc/fs.h" &&
     has '__SetPageMovable(struct page *page, struct address_space' \
	 "$inc/migrate.h"; then
	api=MS_API_AOPS
else
	api=MS_API_NONE
fi

extra=
if has 'MIGRATE_SYNC_NO_COPY,' "$inc/migrate_mode.h"; then
	extra="$extra MS_HAVE_MIGRATE_SYNC_NO_COPY"
fi
for h in "$inc"/highmem*.h; do
	if has 'kmap_local_page(' "$h"; then
		extra="$extra MS_HAVE_KMAP_LOCAL_PAGE"
		break
	fi
done

echo "$api$extra"
