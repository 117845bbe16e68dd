/* SPDX-License-Identifier: MIT */
/*
 * page.c: the owner of page states and of every count derived from them.
 */
#ifndef PAGERD_PAGE_H
#define PAGERD_PAGE_H

#include "pagerd.h"

#endif
