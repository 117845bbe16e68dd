/* SPDX-License-Identifier: MIT */
/*
 * Opening the process's userfaultfd.
 *
 * Faults taken inside the kernel (read(2) into a region, a syscall argument)
 * are trapped only by a uffd opened without UFFD_USER_MODE_ONLY.  That needs
 * access to /dev/userfaultfd, CAP_SYS_PTRACE, or vm.unprivileged_userfaultfd=1;
 * without any of them we fall back to user-mode-only and say so through
 * pager_get_info(), so the application can tell why a read(2) into a region
 * returned EFAULT.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "uffd_compat.h"

static int uffd_new(int flags)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

	if (dev >= 0) {
		int fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);

		close(dev);
		if (fd >= 0)
			return fd;
	}
	int fd = (int)syscall(SYS_userfaultfd, flags);

	return fd >= 0 ? fd : -errno;
}

/* Asks the kernel what it supports: UFFDIO_API can be issued only once per
 * uffd, so the question costs a throw-away descriptor. */
static int uffd_supported(int flags, uint64_t *ret_features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int fd = uffd_new(flags), r = 0;

	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		r = -errno;
	else
		*ret_features = api.features;
	close(fd);
	return r;
}

int pager_uffd_open(int *ret_fd, uint64_t *ret_features, bool *ret_kernel)
{
	int base = O_CLOEXEC | O_NONBLOCK;
	bool kernel = true;
	uint64_t supported;
	int r = uffd_supported(base, &supported);

	if (r == -EPERM) {
		kernel = false;
		base |= UFFD_USER_MODE_ONLY;
		r = uffd_supported(base, &supported);
	}
	if (r < 0)
		return r;
	if ((supported & PAGER_UFFD_FEATURES_REQUIRED) != PAGER_UFFD_FEATURES_REQUIRED)
		return -EOPNOTSUPP;

	struct uffdio_api api = {
		.api = UFFD_API,
		.features = PAGER_UFFD_FEATURES_REQUIRED |
			    (supported & PAGER_UFFD_FEATURES_OPTIONAL),
	};
	int fd = uffd_new(base);

	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	*ret_fd = fd;
	*ret_features = api.features;
	*ret_kernel = kernel;
	return 0;
}
