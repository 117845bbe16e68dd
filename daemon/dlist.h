/* SPDX-License-Identifier: MIT */
/*
 * Doubly-linked lists of requests, in order, as the I/O engine (io.c) and
 * the RBD store (store_rbd.c) keep them: a list is a struct with `head`
 * and `tail`, an element a struct with `next` and `prev`.
 *
 * DLIST_FUNCS(prefix, list_type, elem_type) defines, for those types,
 * prefix_push_tail(), prefix_push_head() and prefix_remove() (which
 * clears the element's links).  Static inline and marked unused: a file
 * uses those it needs (clang warns of unused ones a macro expands in a .c).
 */
#ifndef PAGERD_DLIST_H
#define PAGERD_DLIST_H

#define DLIST_FUNCS(prefix, list_type, elem_type)			\
static inline __attribute__((unused)) void prefix##_push_tail(list_type *l, elem_type *r)	\
{									\
	r->next = NULL;							\
	r->prev = l->tail;						\
	if (l->tail)							\
		l->tail->next = r;					\
	else								\
		l->head = r;						\
	l->tail = r;							\
}									\
									\
static inline __attribute__((unused)) void prefix##_push_head(list_type *l, elem_type *r)	\
{									\
	r->prev = NULL;							\
	r->next = l->head;						\
	if (l->head)							\
		l->head->prev = r;					\
	else								\
		l->tail = r;						\
	l->head = r;							\
}									\
									\
static inline __attribute__((unused)) void prefix##_remove(list_type *l, elem_type *r)		\
{									\
	if (r->prev)							\
		r->prev->next = r->next;				\
	else								\
		l->head = r->next;					\
	if (r->next)							\
		r->next->prev = r->prev;				\
	else								\
		l->tail = r->prev;					\
	r->next = r->prev = NULL;					\
}

#endif /* PAGERD_DLIST_H */
