/* SPDX-License-Identifier: MIT */
/*
 * userfaultfd definitions newer than the build machine's uapi headers
 * (Debian 12 ships 6.1's).  Every use is gated on the feature bits that
 * UFFDIO_API returned at run time, so building against old headers and
 * running on an old kernel are both fine.
 */
#ifndef PAGER_UFFD_COMPAT_H
#define PAGER_UFFD_COMPAT_H

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif

#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
	struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

/* The features libpager asks for: events so the daemon's view of a region
 * stays true when the app unmaps or moves a region, shmem MISSING (and WP,
 * where the kernel has it). */
#define PAGER_UFFD_FEATURES_REQUIRED                                       \
	(UFFD_FEATURE_MISSING_SHMEM |                                      \
	 UFFD_FEATURE_EVENT_UNMAP |                                        \
	 UFFD_FEATURE_EVENT_REMAP)
#define PAGER_UFFD_FEATURES_OPTIONAL                                       \
	(UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_PAGEFAULT_FLAG_WP | \
	 UFFD_FEATURE_POISON | UFFD_FEATURE_THREAD_ID)

#endif /* PAGER_UFFD_COMPAT_H */
