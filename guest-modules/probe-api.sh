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
#   MS_API_BALLOON      6.17 on: __SetPageMovable is gone, but the balloon
#                       core (balloon_page_enqueue, struct balloon_dev_info
#                       with a migratepage callback) is exported to modules
#   MS_API_REMOVED      movable_operations without __SetPageMovable and
#                       without a balloon API for modules
#   MS_API_NONE         older than 4.8, or SRCTREE has no kernel headers
#   MS_HAVE_MIGRATE_SYNC_NO_COPY  the no-copy migrate mode exists (4.14 .. 6.9)
#   MS_HAVE_KMAP_LOCAL_PAGE       kmap_local_page() exists (5.11 on)
#   MS_HAVE_BALLOON_H             the balloon API is in balloon.h (7.0 on),
#                                 not balloon_compaction.h

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
		for h in "$inc/balloon.h" "$inc/balloon_compaction.h"; do
			if has 'void balloon_page_enqueue(' "$h" &&
			   has '(*migratepage)(struct balloon_dev_info' "$h"; then
				api=MS_API_BALLOON
				balloon_h=$h
				break
			fi
		done
	fi
elif has '(*isolate_page)(struct page' "$inc/fs.h" &&
     has '__SetPageMovable(struct page *page, struct address_space' \
	 "$inc/migrate.h"; then
	api=MS_API_AOPS
else
	api=MS_API_NONE
fi

extra=
if [ "${balloon_h:-}" = "$inc/balloon.h" ]; then
	extra="$extra MS_HAVE_BALLOON_H"
fi
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
