/* SPDX-License-Identifier: MIT */
/* The 2 MiB hugetlb pool (/proc/sys/vm/nr_hugepages), grown and shrunk
 * around a test or a benchmark that needs huge pages. */
#ifndef TEST_HUGETLB_H
#define TEST_HUGETLB_H

#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"

/* Add n pages to the pool: returns n, or how many the kernel found (then
 * the pool is as it was). */
long hugetlb_reserve(long n);
/* Take n pages back out of the pool. */
void hugetlb_release(long n);

#endif
