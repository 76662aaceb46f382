// SPDX-License-Identifier: GPL-2.0
/*
 * movable_sample: a driver whose own pages the VM can migrate.
 *
 * The module allocates pages with a movable GFP mask, fills each with a
 * pattern derived from its logical index and a seed, and registers them as
 * non-LRU movable pages, the API that zsmalloc and the memory balloon use
 * (Linux 4.8, commit bda807d44454). Compaction then isolates them, asks the
 * driver to migrate them and, when that fails, to take them back. Everything
 * the harness needs to prove that this happened is in debugfs, see
 * guest-modules/README.md.
 *
 * One source builds for every era it claims. probe-api.sh reads the kernel's
 * own headers and Kbuild passes what they declare as -D flags:
 *
 *  MS_API_AOPS (4.8 .. 5.19): the driver owns an address_space whose a_ops
 *	provide isolate_page/migratepage/putback_page, and marks a page with
 *	__SetPageMovable(page, mapping).
 *  MS_API_MOVABLE_OPS (6.0 .. 6.16): a struct movable_operations with
 *	isolate_page/migrate_page/putback_page, marked with
 *	__SetPageMovable(page, ops).
 *  MS_API_BALLOON (6.17 on): __SetPageMovable() is gone and only page types
 *	the kernel owns (balloon, zsmalloc) have movable_operations. The balloon
 *	core stays exported to modules, so the driver's pages become balloon
 *	pages (balloon_page_enqueue()): the core owns isolate and putback,
 *	page->lru, page_private and the references; the driver owns
 *	migratepage (struct balloon_dev_info), which copies the contents and
 *	moves the logical index, so verify still proves the copy is the
 *	driver's own work.
 *
 * In every era every callback runs with the page locked, isolate_page returns
 * true when the page may move, and migration follows the same reference rules
 * (mm/migrate.c, mm/zsmalloc.c, mm/balloon_compaction.c and
 * drivers/virtio/virtio_balloon.c of 4.8, 5.10 and 6.1):
 *
 *  - the driver holds one reference on each page it owns;
 *  - isolation takes one more for the VM (isolate_movable_page()) and the VM
 *    then links page->lru into its own list, so the driver must take the
 *    page off any list of its own that uses page->lru;
 *  - on success, migrate moves the driver's reference from the old page to
 *    the new one (get_page(new), put_page(old)) and clears the old page's
 *    movable mark with __ClearPageMovable(); the VM drops its isolation
 *    reference on the old page (which frees it) and its allocation
 *    reference on the new page;
 *  - on -EAGAIN the page stays isolated and the VM retries; on any other
 *    error the VM calls putback_page and drops its reference.
 *
 * From 6.17 on the balloon core does the isolation/putback half of these
 * rules itself (mm/balloon.c of 7.2, mm/balloon_compaction.c before 7.0) and
 * calls the driver's migratepage between them; see ms_balloon_migratepage().
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

/* Set by probe-api.sh through Kbuild; stop before anything else fails. */
#if defined(MS_API_REMOVED)
#error "movable_sample: this kernel has neither __SetPageMovable() nor a" \
	" balloon API for modules (see probe-api.sh)"
#elif !defined(MS_API_AOPS) && !defined(MS_API_MOVABLE_OPS) && \
	!defined(MS_API_BALLOON)
#error "movable_sample: no non-LRU movable page API in this kernel's" \
	" headers: it needs Linux 4.8 or later (see probe-api.sh)"
#endif

#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/highmem.h>
#include <linux/kernel.h>
#include <linux/list.h>
#include <linux/log2.h>
#include <linux/cpumask.h>
#include <linux/migrate.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pagemap.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#ifdef MS_API_BALLOON
#ifdef MS_HAVE_BALLOON_H
#include <linux/balloon.h>
#else
#include <linux/balloon_compaction.h>
#endif
#include <linux/xarray.h>

#if !IS_ENABLED(CONFIG_BALLOON_MIGRATION) && \
	!IS_ENABLED(CONFIG_BALLOON_COMPACTION)
#error "movable_sample: from 6.17 on the kernel needs the balloon core with" \
	" migration (kernel-configs/balloon.config)"
#endif
#endif

#if !IS_ENABLED(CONFIG_COMPACTION) || !IS_ENABLED(CONFIG_MIGRATION)
#error "movable_sample: the kernel needs CONFIG_COMPACTION=y and" \
	" CONFIG_MIGRATION=y (kernel-configs/compaction.config)"
#endif

#if !IS_ENABLED(CONFIG_DEBUG_FS)
#error "movable_sample: the kernel needs CONFIG_DEBUG_FS=y:" \
	" the driver's whole interface is in debugfs"
#endif

/*
 * checkpatch --strict asks to "Avoid CamelCase" for __SetPageMovable() and
 * __ClearPageMovable(): those are the kernel's names for the API this module
 * exists to exercise.
 */

static unsigned int pages = 4096;
module_param(pages, uint, 0444);
MODULE_PARM_DESC(pages, "pages to allocate and keep at load time (default 4096)");

static bool movable = true;
module_param(movable, bool, 0444);
MODULE_PARM_DESC(movable, "register the pages as movable (default 1); 0 is the control group");

static unsigned int fragment = 1;
module_param(fragment, uint, 0644);
MODULE_PARM_DESC(fragment, "allocate K pages for each page kept and free the other K-1 (default 1)");

static unsigned long seed = 1;
module_param(seed, ulong, 0444);
MODULE_PARM_DESC(seed, "seed of the pattern written into every page (default 1)");

/*
 * The pages the driver keeps. try_alloc must not let the allocator reclaim or
 * compact, see ms_try_alloc_write().
 */
#define MS_GFP_KEEP	(GFP_HIGHUSER_MOVABLE | __GFP_NORETRY | __GFP_NOWARN)
#define MS_GFP_PROBE \
	((GFP_HIGHUSER_MOVABLE & ~__GFP_RECLAIM) | __GFP_NORETRY | __GFP_NOWARN)
/*
 * compact_alloc's allocations may reclaim and compact (direct compaction is
 * what an order > PAGE_ALLOC_COSTLY_ORDER request does before it fails).
 */
#define MS_GFP_COMPACT	(GFP_HIGHUSER_MOVABLE | __GFP_NORETRY | __GFP_NOWARN)
#define MS_TRY_ALLOC_MAX	65536UL
#define MS_VERIFY_REPORTS	8
/* Pages freed while the VM held them isolated that stats still looks at. */
#define MS_ORPHANS	4096
#define MS_CHURN_MAX	4096UL

/* The largest order the buddy allocator hands out, whatever MAX_ORDER means. */
#define MS_MAX_ORDER	ilog2(MAX_ORDER_NR_PAGES)

/*
 * One logical page: where it lives now, whether the VM has it isolated,
 * whether the driver holds its page lock (held) and whether the driver is
 * about to free it (dying: isolate_page refuses it, as zsmalloc refuses a
 * zspage being freed).
 */
struct ms_slot {
	struct page *page;
	bool isolated;
	bool held;
	bool dying;
};

struct ms_try_result {
	unsigned int order;
	unsigned long requested;
	unsigned long succeeded;
};

static struct {
	/*
	 * lock protects slots[] (the array and its entries), nr, cap, list, the
	 * counters and the fault injection state. It is taken inside the page
	 * lock by the callbacks, so nobody may sleep on a page lock while
	 * holding it (ms_lock_slot() only trylocks under it).
	 *
	 * A slot's page only changes in ms_migrate() and ms_release(), both
	 * with that page locked: holding the page lock pins the slot.
	 */
	spinlock_t lock;
	/* Serialises the paths that add pages or probe the allocator. */
	struct mutex alloc_lock;
	struct ms_slot *slots;
	unsigned long nr;
	unsigned long cap;
	/* Pages the driver owns and the VM has not isolated, via page->lru. */
	struct list_head list;

	unsigned long isolated;
	unsigned long migrated;
	unsigned long putback;
	unsigned long eagain;
	unsigned long failed;
	unsigned long isolated_now;

	/*
	 * churn and the races it meets (guest-modules/README.md, "churn"):
	 * pages replaced, replaced pages whose contents were wrong, frees that
	 * met a page the VM held isolated, isolate_page calls refused because
	 * the page was being freed, trylocks that found a page locked by
	 * someone other than the driver, migrations of a page while the driver
	 * held it locked (never, if the VM keeps the lock rule), callbacks
	 * that began while another CPU was inside one, and on which CPUs.
	 */
	unsigned long churned;
	unsigned long churn_mismatches;
	unsigned long churn_calls;
	unsigned long freed_isolated;
	unsigned long isolate_refused;
	unsigned long lock_busy;
	unsigned long migrated_held;
	unsigned long overlaps;
	struct cpumask callback_cpus;
	struct page *orphans[MS_ORPHANS];

	unsigned long inject_eagain_every;
	unsigned long inject_fail_every;
	/* migrate calls since the injection settings last changed */
	unsigned long inject_calls;

	struct ms_try_result last_try;
	struct ms_try_result last_order;
	struct dentry *dir;
#ifdef MS_API_BALLOON
	/*
	 * The balloon the movable pages are enqueued in. Its core owns
	 * page_private (a pointer to this), so the logical index of a page is
	 * looked up by PFN in index_of instead.
	 */
	struct balloon_dev_info balloon;
	struct xarray index_of;
#endif
} ms = {
	.lock = __SPIN_LOCK_UNLOCKED(ms.lock),
	.alloc_lock = __MUTEX_INITIALIZER(ms.alloc_lock),
	.list = LIST_HEAD_INIT(ms.list),
};

#ifdef MS_HAVE_KMAP_LOCAL_PAGE
static inline void *ms_map(struct page *page)
{
	return kmap_local_page(page);
}

static inline void ms_unmap(void *addr)
{
	kunmap_local(addr);
}
#else
/*
 * checkpatch of 6.x calls kmap_atomic() (and 7.x kunmap_atomic()) deprecated
 * in favour of kmap_local_page(), which only exists from 5.11 on; this branch
 * is only built for kernels without it.
 */
static inline void *ms_map(struct page *page)
{
	return kmap_atomic(page);
}

static inline void ms_unmap(void *addr)
{
	kunmap_atomic(addr);
}
#endif

/*
 * Word @word of logical page @index: splitmix64 of (seed, index, word). The
 * word takes the low 16 bits of the counter, so every word of every page
 * has its own value for pages of up to 512 KiB (64 KiB pages: 8192 words).
 */
static u64 ms_pattern(unsigned long index, unsigned int word)
{
	u64 z;

	BUILD_BUG_ON(PAGE_SIZE / sizeof(u64) > 65536);
	z = seed + (((u64)index << 16) + word + 1) * 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void ms_fill(struct page *page, unsigned long index)
{
	u64 *words = ms_map(page);
	unsigned int i;

	for (i = 0; i < PAGE_SIZE / sizeof(u64); i++)
		words[i] = ms_pattern(index, i);
	ms_unmap(words);
}

/* Number of words of @page that do not hold logical page @index's pattern. */
static unsigned int ms_check(struct page *page, unsigned long index)
{
	u64 *words = ms_map(page);
	unsigned int i, bad = 0;

	for (i = 0; i < PAGE_SIZE / sizeof(u64); i++)
		bad += words[i] != ms_pattern(index, i);
	ms_unmap(words);
	return bad;
}

/* Under ms.lock: is @page the current page of logical page @index? */
static bool ms_owns(struct page *page, unsigned long index)
{
	return index < ms.nr && ms.slots[index].page == page;
}

static unsigned long ms_nr(void)
{
	unsigned long nr;

	spin_lock(&ms.lock);
	nr = ms.nr;
	spin_unlock(&ms.lock);
	return nr;
}

/* Callbacks of the driver running on each CPU right now. */
static DEFINE_PER_CPU(atomic_t, ms_busy);

/*
 * A callback begins: count it as an overlap when another CPU is inside one
 * at this moment (the concurrency PG_isolated exists for). Returns the CPU
 * to give ms_leave(): the callback may be preempted and end on another.
 */
static int ms_enter(void)
{
	int cpu = raw_smp_processor_id(), other;
	bool overlap = false;

	atomic_inc(per_cpu_ptr(&ms_busy, cpu));
	for_each_online_cpu(other)
		if (other != cpu && atomic_read(per_cpu_ptr(&ms_busy, other)))
			overlap = true;
	spin_lock(&ms.lock);
	cpumask_set_cpu(cpu, &ms.callback_cpus);
	ms.overlaps += overlap;
	spin_unlock(&ms.lock);
	return cpu;
}

static void ms_leave(int cpu)
{
	atomic_dec(per_cpu_ptr(&ms_busy, cpu));
}

/* Under ms.lock: the error to return from this migrate call, or 0. */
static int ms_injected_fault(void)
{
	unsigned long call = ++ms.inject_calls;

	if (ms.inject_eagain_every && call % ms.inject_eagain_every == 0) {
		ms.eagain++;
		return -EAGAIN;
	}
	if (ms.inject_fail_every && call % ms.inject_fail_every == 0) {
		ms.failed++;
		/*
		 * Any error but -EAGAIN (and -ENOMEM, which newer kernels
		 * take as "stop migrating this whole batch") makes the VM
		 * give up on this page and call putback_page.
		 */
		return -EBUSY;
	}
	return 0;
}

#ifdef MS_API_BALLOON
/*
 * Which logical page a page frame holds. page_private belongs to the balloon
 * core here, so the driver keeps its own PFN -> index map.
 */
static unsigned long ms_index_of(struct page *page)
{
	void *entry = xa_load(&ms.index_of, page_to_pfn(page));

	return xa_is_value(entry) ? xa_to_value(entry) : ULONG_MAX;
}

static int ms_set_index(struct page *page, unsigned long index, gfp_t gfp)
{
	return xa_err(xa_store(&ms.index_of, page_to_pfn(page),
			       xa_mk_value(index), gfp));
}

static void ms_clear_index(struct page *page)
{
	xa_erase(&ms.index_of, page_to_pfn(page));
}

/* The core isolates pages without telling the driver: nothing to check. */
static bool ms_isolated_by_driver(unsigned long index)
{
	return true;
}
#else
static unsigned long ms_index_of(struct page *page)
{
	return page_private(page);
}

static int ms_set_index(struct page *page, unsigned long index, gfp_t gfp)
{
	set_page_private(page, index);
	return 0;
}

static void ms_clear_index(struct page *page)
{
	set_page_private(page, 0);
}

/* Under ms.lock: did ms_isolate() hand logical page @index to the VM? */
static bool ms_isolated_by_driver(unsigned long index)
{
	return ms.slots[index].isolated;
}
#endif

/*
 * The driver's half of a migration, the same in every era: @src (isolated,
 * locked) must be the current page of its logical index; copy it into @dst
 * (locked, the VM holds the only reference) and make @dst that index's page.
 * What happens to references, lists and movable marks differs per era and is
 * done by the callers.
 */
static int ms_copy(struct page *dst, struct page *src, unsigned long index,
		   enum migrate_mode mode)
{
	int rc;

#ifdef MS_HAVE_MIGRATE_SYNC_NO_COPY
	/*
	 * This mode expects someone else (a DMA engine, for HMM) to copy the
	 * contents; the balloon refuses it the same way. Compaction never
	 * uses it.
	 */
	if (mode == MIGRATE_SYNC_NO_COPY) {
		spin_lock(&ms.lock);
		ms.failed++;
		spin_unlock(&ms.lock);
		return -EINVAL;
	}
#endif

	spin_lock(&ms.lock);
	if (WARN_ON_ONCE(!ms_owns(src, index) ||
			 !ms_isolated_by_driver(index))) {
		rc = -EINVAL;
	} else {
		/* The VM must hold the page lock: the driver cannot. */
		ms.migrated_held += ms.slots[index].held;
		rc = ms_injected_fault();
	}
	spin_unlock(&ms.lock);
	if (rc)
		return rc;

	/* Only the balloon era's PFN map can fail: then the page stays. */
	rc = ms_set_index(dst, index, GFP_NOWAIT | __GFP_NOWARN);
	if (rc) {
		spin_lock(&ms.lock);
		ms.failed++;
		spin_unlock(&ms.lock);
		return -EBUSY;
	}
	copy_highpage(dst, src);

	spin_lock(&ms.lock);
	ms.slots[index].page = dst;
	/* Before 6.17 the page leaves isolation here, counted with migrated. */
	ms.isolated_now -= ms.slots[index].isolated;
	ms.slots[index].isolated = false;
	ms.migrated++;
	spin_unlock(&ms.lock);
	ms_clear_index(src);
	return 0;
}

static int ms_move(struct page *dst, struct page *src, enum migrate_mode mode)
{
	int cpu = ms_enter(), rc;

	rc = ms_copy(dst, src, ms_index_of(src), mode);
	ms_leave(cpu);
	return rc;
}

#ifdef MS_API_BALLOON
/*
 * migratepage of the driver's balloon. The core (balloon_page_migrate()) has
 * isolated @page, both pages are locked; on success it enqueues @newpage in
 * the balloon with a reference of its own and frees @page, on -EAGAIN the VM
 * retries, on any other error it puts @page back on the balloon list.
 */
static int ms_balloon_migratepage(struct balloon_dev_info *balloon,
				  struct page *newpage, struct page *page,
				  enum migrate_mode mode)
{
	return ms_move(newpage, page, mode);
}

static void ms_api_init(void)
{
	balloon_devinfo_init(&ms.balloon);
	ms.balloon.migratepage = ms_balloon_migratepage;
	xa_init(&ms.index_of);
}

static struct page *ms_alloc_page(void)
{
	return balloon_page_alloc();
}

/* Hand a published page to the balloon core: from now on it may move. */
static void ms_make_movable(struct page *page)
{
	balloon_page_enqueue(&ms.balloon, page);
}

/* A balloon page's page->lru belongs to the balloon core. */
static bool ms_on_driver_list(void)
{
	return !movable;
}

/* Balloon pages are released through the balloon (ms_release_pages()). */
static void ms_clear_movable(struct page *page)
{
}
#else
/*
 * isolate_page: the VM wants to migrate @page, which it has locked and holds
 * a reference on. From now on page->lru is the VM's, so the page leaves the
 * driver's list.
 */
static bool ms_isolate(struct page *page, isolate_mode_t mode)
{
	unsigned long index = ms_index_of(page);
	int cpu = ms_enter();
	bool ok, refused = false;

	spin_lock(&ms.lock);
	ok = ms_owns(page, index) && !ms.slots[index].isolated;
	if (ok && ms.slots[index].dying) {
		/* The driver waits for this page's lock to free it. */
		refused = true;
		ms.isolate_refused++;
	} else if (ok) {
		list_del(&page->lru);
		ms.slots[index].isolated = true;
		ms.isolated++;
		ms.isolated_now++;
	}
	spin_unlock(&ms.lock);
	ms_leave(cpu);
	WARN_ON_ONCE(!ok);
	return ok && !refused;
}

static void ms_set_movable(struct page *page);

/*
 * migrate: ms_move() copies @src into @dst and makes @dst the logical page;
 * then the driver's reference moves with it.
 */
static int ms_migrate(struct page *dst, struct page *src,
		      enum migrate_mode mode)
{
	int rc = ms_move(dst, src, mode);

	if (rc)
		return rc;
	/* The driver's reference now lives on @dst ... */
	get_page(dst);
	ms_set_movable(dst);
	spin_lock(&ms.lock);
	/* @dst is not isolated: the VM took it off its free list already. */
	list_add_tail(&dst->lru, &ms.list);
	spin_unlock(&ms.lock);

	/*
	 * ... and leaves @src: unmark it (under its lock, as the VM checks
	 * PageMovable() under the page lock) and drop the driver's reference.
	 * The VM's isolation reference keeps @src alive until the VM drops it.
	 */
	__ClearPageMovable(src);
	put_page(src);
	return MIGRATEPAGE_SUCCESS;
}

/*
 * putback_page: migration of the isolated @page failed for good (or ran out
 * of retries); the VM has unlinked page->lru and gives the page back.
 */
static void ms_putback(struct page *page)
{
	unsigned long index = ms_index_of(page);
	int cpu = ms_enter();
	bool ok;

	spin_lock(&ms.lock);
	ok = ms_owns(page, index) && ms.slots[index].isolated;
	if (ok) {
		ms.slots[index].isolated = false;
		list_add_tail(&page->lru, &ms.list);
		ms.putback++;
		ms.isolated_now--;
	}
	spin_unlock(&ms.lock);
	ms_leave(cpu);
	WARN_ON_ONCE(!ok);
}

static struct page *ms_alloc_page(void)
{
	return alloc_page(MS_GFP_KEEP);
}

#ifdef MS_API_AOPS
static int ms_aops_migratepage(struct address_space *mapping,
			       struct page *newpage, struct page *page,
			       enum migrate_mode mode)
{
	return ms_migrate(newpage, page, mode);
}

static const struct address_space_operations ms_aops = {
	.isolate_page = ms_isolate,
	.migratepage = ms_aops_migratepage,
	.putback_page = ms_putback,
};

/*
 * The owner of the pages: an address_space of the driver's own whose only
 * job is to carry ms_aops. zsmalloc and the balloon hang theirs off an
 * anonymous inode of a private pseudo filesystem; that needs a mount and an
 * API that changed in 5.3 (mount_pseudo -> init_pseudo) for nothing the VM
 * uses here. A static, address_space_init_once()d mapping is enough:
 *  - the VM reaches it only through page_mapping() of a page that is still
 *    PageMovable(), under that page's lock, and only dereferences ->a_ops
 *    (PageMovable(), isolate_movable_page(), move_to_new_page(),
 *    putback_movable_page());
 *  - it is never a file's mapping: no page cache, no writeback, no mmap,
 *    ->host stays NULL (dump_page() copes with that);
 *  - it lives as long as the module, and no page refers to it any more
 *    once ms_release() has run on every page (see there).
 */
static struct address_space ms_mapping;

static void ms_set_movable(struct page *page)
{
	__SetPageMovable(page, &ms_mapping);
}

static void ms_api_init(void)
{
	address_space_init_once(&ms_mapping);
	ms_mapping.a_ops = &ms_aops;
}
#else
static const struct movable_operations ms_movable_ops = {
	.isolate_page = ms_isolate,
	.migrate_page = ms_migrate,
	.putback_page = ms_putback,
};

static void ms_set_movable(struct page *page)
{
	__SetPageMovable(page, &ms_movable_ops);
}

static void ms_api_init(void)
{
}
#endif

/* Mark a published page movable; the caller holds its page lock. */
static void ms_make_movable(struct page *page)
{
	ms_set_movable(page);
}

/* Until the VM isolates it, every page the driver keeps is on ms.list. */
static bool ms_on_driver_list(void)
{
	return true;
}

static void ms_clear_movable(struct page *page)
{
	__ClearPageMovable(page);
}

/*
 * Under ms.lock: how many of the last MS_ORPHANS pages freed while isolated
 * someone still holds with the mark __ClearPageMovable() left (page->mapping
 * exactly PAGE_MAPPING_MOVABLE). Freeing a page clears page->mapping
 * (free_pages_prepare()), so once no compaction runs this is 0 unless the VM
 * never released such a page or the driver kept its reference.
 */
static unsigned long ms_orphans_held(void)
{
	unsigned long i, held = 0;
	struct page *page;

	for (i = 0; i < min_t(unsigned long, ms.freed_isolated, MS_ORPHANS);
	     i++) {
		page = ms.orphans[i];
		held += page_ref_count(page) > 0 &&
			READ_ONCE(page->mapping) ==
			(struct address_space *)PAGE_MAPPING_MOVABLE;
	}
	return held;
}
#endif

/*
 * Lock the current page of logical page @index and return it. While the
 * caller holds the page lock the slot cannot change (migration needs that
 * lock) and the page cannot be freed (the driver's reference). The wait
 * happens without ms.lock: the callbacks take ms.lock inside page locks.
 *
 * The wait polls trylock_page() and never sleeps in lock_page(): before
 * 5.18 the VM sets and clears PG_isolated under the page lock with the
 * non-atomic __SetPageIsolated() and __ClearPageIsolated() (in
 * isolate_movable_page(), putback_movable_page(), move_to_new_page()).
 * That read-modify-write of page->flags can undo the PG_waiters bit (4.10
 * on) that a lock_page() waiter sets at the same moment; unlock_page() then
 * wakes nobody and the waiter sleeps for good (rmmod hung so on 5.10 SMP).
 * Fixed upstream by commit 356ea3865687 ("mm/migrate: fix race between lock
 * page and clear PG_Isolated"), not in 5.10.y. The VM holds a page's lock
 * for one step at a time, so a try every tick gets it soon.
 */
static struct page *ms_lock_slot(unsigned long index)
{
	struct page *page;
	bool locked;

	for (;;) {
		spin_lock(&ms.lock);
		page = ms.slots[index].page;
		locked = trylock_page(page);
		if (locked)
			ms.slots[index].held = true;
		else if (!ms.slots[index].held)
			ms.lock_busy++;
		spin_unlock(&ms.lock);
		if (locked)
			return page;
		/* The VM is isolating, migrating or putting it back. */
		schedule_timeout_uninterruptible(1);
	}
}

/* Undo ms_lock_slot(). */
static void ms_unlock_slot(unsigned long index, struct page *page)
{
	spin_lock(&ms.lock);
	ms.slots[index].held = false;
	spin_unlock(&ms.lock);
	unlock_page(page);
}

/*
 * Take logical page @index away from the VM to free it: lock it (meanwhile
 * isolate_page refuses it) and take it off the driver's list unless the VM
 * has it isolated. Returns the locked page; *@isolated says whether the VM
 * holds it isolated: it then releases the page itself, see ms_release().
 */
static struct page *ms_take(unsigned long index, bool *isolated)
{
	struct page *page;

	spin_lock(&ms.lock);
	ms.slots[index].dying = true;
	spin_unlock(&ms.lock);
	page = ms_lock_slot(index);
	spin_lock(&ms.lock);
	*isolated = ms.slots[index].isolated;
	if (!*isolated && ms_on_driver_list())
		list_del(&page->lru);
	spin_unlock(&ms.lock);
	return page;
}

/*
 * Drop a page ms_take() (or ms_churn_take()) returned: no longer movable,
 * no index, unlocked, and the driver's reference dropped last (see
 * ms_release()).
 */
static void ms_drop(struct page *page)
{
	if (movable)
		ms_clear_movable(page);
	ms_clear_index(page);
	unlock_page(page);
	put_page(page);
}

/* Make room for @want slots; called with ms.alloc_lock held. */
static int ms_reserve(unsigned long want)
{
	struct ms_slot *slots, *old;
	unsigned long cap;

	if (want <= ms.cap)
		return 0;
	cap = max(want, 2 * ms.cap);
	if (cap > ULONG_MAX / sizeof(*slots))
		return -ENOMEM;
	slots = vzalloc(cap * sizeof(*slots));
	if (!slots)
		return -ENOMEM;

	spin_lock(&ms.lock);
	if (ms.nr)
		memcpy(slots, ms.slots, ms.nr * sizeof(*slots));
	old = ms.slots;
	ms.slots = slots;
	ms.cap = cap;
	spin_unlock(&ms.lock);
	vfree(old);
	return 0;
}

/*
 * Fill @page, publish it as the next logical page and, maybe, movable. On
 * error the page is not published and stays the caller's.
 */
static int ms_keep(struct page *page)
{
	unsigned long index = ms.nr;
	int err;

	ms_fill(page, index);
	err = ms_set_index(page, index, GFP_KERNEL);
	if (err)
		return err;
	/*
	 * Mark and publish under the page lock, so that no callback can see a
	 * movable page the bookkeeping does not know yet.
	 */
	lock_page(page);
	spin_lock(&ms.lock);
	ms.slots[index].page = page;
	ms.slots[index].isolated = false;
	if (ms_on_driver_list())
		list_add_tail(&page->lru, &ms.list);
	ms.nr = index + 1;
	spin_unlock(&ms.lock);
	if (movable)
		ms_make_movable(page);
	unlock_page(page);
	return 0;
}

/*
 * Keep @count more pages. With fragment=K, allocate K times as many first and
 * then free all but every Kth, so the kept pages sit scattered over many
 * pageblocks and the free memory around them is order-0 rubble: the pages pin
 * those blocks unless the VM can move them. All or nothing.
 */
static int ms_add_pages(unsigned long count)
{
	unsigned int k = READ_ONCE(fragment);
	struct page *page, *next;
	unsigned long i;
	LIST_HEAD(batch);
	int err;

	if (!k || count > ULONG_MAX / k)
		return -EINVAL;

	mutex_lock(&ms.alloc_lock);
	err = ms_reserve(ms.nr + count);
	for (i = 0; !err && i < count * k; i++) {
		page = ms_alloc_page();
		if (!page)
			err = -ENOMEM;
		else
			list_add_tail(&page->lru, &batch);
		cond_resched();
	}
	i = 0;
	list_for_each_entry_safe(page, next, &batch, lru) {
		list_del(&page->lru);
		if (!err && i++ % k == 0) {
			err = ms_keep(page);
			if (!err)
				continue;
		}
		__free_page(page);
	}
	mutex_unlock(&ms.alloc_lock);
	return err;
}

/*
 * Give logical page @index back to the page allocator; returns whether the VM
 * had it isolated.
 *
 * Safe at any moment, also while the VM holds the page isolated: under the
 * page lock no callback runs on it, and __ClearPageMovable() leaves only the
 * PAGE_MAPPING_MOVABLE bit in page->mapping, so page_mapping() is NULL and
 * PageMovable() false. Every VM path re-checks PageMovable() under the page
 * lock before it touches the mapping or ops (isolate_movable_page(),
 * putback_movable_pages(), unmap_and_move()/move_to_new_page() in 4.8,
 * migrate_folio_unmap()/move_to_new_folio() in 6.1) and, finding it false,
 * just clears PG_isolated and drops its own reference, which frees the page.
 * So an isolated page needs no deferred free here: the VM's reference is the
 * deferral, and once every page went through this function nothing points
 * at ms_mapping/ms_movable_ops or the module text any more.
 *
 * The driver's reference is dropped only after unlock_page(): the VM may
 * free an isolated page without taking its lock once it holds the last
 * reference (6.1 migrate_folio_unmap()), which must not happen while we
 * still hold PG_locked.
 */
static bool ms_release(unsigned long index)
{
	bool isolated;
	struct page *page = ms_take(index, &isolated);

	spin_lock(&ms.lock);
	ms.slots[index].page = NULL;
	spin_unlock(&ms.lock);
	ms_drop(page);
	return isolated;
}

/* Release logical pages 0 .. @nr - 1; returns how many the VM had isolated. */
static unsigned long ms_release_each(unsigned long nr)
{
	unsigned long index, isolated = 0;

	for (index = 0; index < nr; index++) {
		isolated += ms_release(index);
		cond_resched();
	}
	return isolated;
}

#ifdef MS_API_BALLOON
/*
 * Pages in the balloon are taken out with balloon_page_list_dequeue(), which
 * skips the ones the VM holds isolated: an isolated balloon page cannot be
 * deflated. The VM holds a page only for one migration attempt (its retries
 * included), so wait for it to migrate the page or put it back. One page at
 * a time, like ms_release_each(), so a compaction running meanwhile can
 * still isolate the pages not released yet. Returns the most pages the VM
 * held isolated at once while the unload ran (the balloon core's count): the
 * evidence that an unload raced with a compaction.
 */
static unsigned long ms_release_pages(unsigned long nr)
{
	unsigned long left = nr, isolated = 0;
	struct page *page;
	LIST_HEAD(taken);

	if (!movable)
		return ms_release_each(nr);
	while (left) {
		isolated = max(isolated, READ_ONCE(ms.balloon.isolated_pages));
		if (!balloon_page_list_dequeue(&ms.balloon, &taken, 1)) {
			schedule_timeout_uninterruptible(1);
			continue;
		}
		page = list_first_entry(&taken, struct page, lru);
		list_del(&page->lru);
		ms_clear_index(page);
		put_page(page);
		left--;
		cond_resched();
	}
	xa_destroy(&ms.index_of);
	return isolated;
}

/*
 * The page churn frees next, locked, and its logical index. The balloon core
 * hands out only pages it has not isolated (balloon_page_list_dequeue()), so
 * from 6.17 on churn frees whichever page it gets and never an isolated one;
 * NULL when the VM holds every page isolated at this moment.
 */
static struct page *ms_churn_take(unsigned long hint, unsigned long *index,
				  bool *isolated)
{
	struct page *page;
	LIST_HEAD(taken);

	if (!movable) {
		*index = hint;
		return ms_take(hint, isolated);
	}
	*isolated = false;
	if (!balloon_page_list_dequeue(&ms.balloon, &taken, 1))
		return NULL;
	page = list_first_entry(&taken, struct page, lru);
	list_del(&page->lru);
	*index = ms_index_of(page);
	if (WARN_ON_ONCE(*index >= ms_nr())) {
		balloon_page_enqueue(&ms.balloon, page);
		return NULL;
	}
	/*
	 * A page in the balloon list is not being migrated, so it is its
	 * slot's page; out of the balloon it cannot move. Verify may still
	 * hold its lock.
	 */
	WARN_ON_ONCE(ms_lock_slot(*index) != page);
	return page;
}
#else
static unsigned long ms_release_pages(unsigned long nr)
{
	return ms_release_each(nr);
}

static struct page *ms_churn_take(unsigned long hint, unsigned long *index,
				  bool *isolated)
{
	*index = hint;
	return ms_take(hint, isolated);
}
#endif

/*
 * One churn step: free a page of the driver's (from @hint's slot before 6.17,
 * even while the VM holds it isolated) and keep a new page for the same
 * logical index, checking the old page's contents first. Returns 0, or
 * -EAGAIN when there was no page to take, or -ENOMEM.
 */
static int ms_churn_one(unsigned long hint)
{
	struct page *old, *page = ms_alloc_page();
	unsigned long index;
	unsigned int bad;
	bool isolated;
	int err;

	if (!page)
		return -ENOMEM;
	old = ms_churn_take(hint, &index, &isolated);
	if (!old) {
		__free_page(page);
		return -EAGAIN;
	}
	bad = ms_check(old, index);
	ms_fill(page, index);
	err = ms_set_index(page, index, GFP_KERNEL);
	if (err) {
		/* Keep the old page: it is still published and intact. */
		__free_page(page);
		page = old;
	} else {
		lock_page(page);
	}
	spin_lock(&ms.lock);
	ms.slots[index].page = page;
	ms.slots[index].isolated = false;
	ms.slots[index].held = false;
	ms.slots[index].dying = false;
	if (ms_on_driver_list())
		list_add_tail(&page->lru, &ms.list);
	ms.churn_mismatches += bad != 0;
	if (isolated && !err) {
		ms.orphans[ms.freed_isolated % MS_ORPHANS] = old;
		ms.freed_isolated++;
		ms.isolated_now--;
	}
	ms.churned += !err;
	spin_unlock(&ms.lock);
	if (movable)
		ms_make_movable(page);
	unlock_page(page);
	if (!err)
		ms_drop(old);
	return err;
}

static void ms_release_all(void)
{
	unsigned long nr = ms.nr, isolated = ms_release_pages(nr);

	vfree(ms.slots);
	if (nr)
		pr_info("released %lu pages, %lu of them isolated by the VM\n",
			nr, isolated);
}

/* pages: "<index> <pfn>" for every kept page, in index order. */
static void *ms_pages_start(struct seq_file *m, loff_t *pos)
{
	return *pos < ms_nr() ? pos : NULL;
}

static void *ms_pages_next(struct seq_file *m, void *v, loff_t *pos)
{
	++*pos;
	return ms_pages_start(m, pos);
}

static void ms_pages_stop(struct seq_file *m, void *v)
{
}

static int ms_pages_show(struct seq_file *m, void *v)
{
	unsigned long index = *(loff_t *)v;
	unsigned long pfn;

	spin_lock(&ms.lock);
	pfn = page_to_pfn(ms.slots[index].page);
	spin_unlock(&ms.lock);
	seq_printf(m, "%lu %lu\n", index, pfn);
	return 0;
}

static const struct seq_operations ms_pages_seq_ops = {
	.start = ms_pages_start,
	.next = ms_pages_next,
	.stop = ms_pages_stop,
	.show = ms_pages_show,
};

static int ms_pages_open(struct inode *inode, struct file *file)
{
	return seq_open(file, &ms_pages_seq_ops);
}

static const struct file_operations ms_pages_fops = {
	.owner = THIS_MODULE,
	.open = ms_pages_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = seq_release,
};

/*
 * stats: "name value" lines, one consistent snapshot of what the driver
 * counts itself. From 6.17 on the balloon core isolates and puts pages back
 * without telling the driver: there isolated and putback are not reported
 * and isolated_now is the core's own count.
 */
static int ms_stats_show(struct seq_file *m, void *v)
{
	static const char * const names[] = {
		"nr_pages", "movable", "migrated", "eagain", "failed",
		"isolated_now", "inject_eagain_every", "inject_fail_every",
		"churned", "churn_mismatches", "lock_busy", "migrated_held",
		"overlaps", "callback_cpus",
#ifndef MS_API_BALLOON
		"isolated", "putback", "freed_isolated", "isolate_refused",
		"orphans_held",
#endif
	};
	unsigned long val[ARRAY_SIZE(names)];
	unsigned int i;

	spin_lock(&ms.lock);
	val[0] = ms.nr;
	val[1] = movable;
	val[2] = ms.migrated;
	val[3] = ms.eagain;
	val[4] = ms.failed;
#ifdef MS_API_BALLOON
	val[5] = READ_ONCE(ms.balloon.isolated_pages);
#else
	val[5] = ms.isolated_now;
	val[14] = ms.isolated;
	val[15] = ms.putback;
	val[16] = ms.freed_isolated;
	val[17] = ms.isolate_refused;
	val[18] = ms_orphans_held();
#endif
	val[6] = ms.inject_eagain_every;
	val[7] = ms.inject_fail_every;
	val[8] = ms.churned;
	val[9] = ms.churn_mismatches;
	val[10] = ms.lock_busy;
	val[11] = ms.migrated_held;
	val[12] = ms.overlaps;
	val[13] = cpumask_weight(&ms.callback_cpus);
	spin_unlock(&ms.lock);
	for (i = 0; i < ARRAY_SIZE(val); i++)
		seq_printf(m, "%s %lu\n", names[i], val[i]);
	return 0;
}

static int ms_stats_open(struct inode *inode, struct file *file)
{
	return single_open(file, ms_stats_show, NULL);
}

static const struct file_operations ms_stats_fops = {
	.owner = THIS_MODULE,
	.open = ms_stats_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
};

/* verify: re-check every page, each under its lock so it cannot move. */
static int ms_verify_show(struct seq_file *m, void *v)
{
	unsigned long index, nr = ms_nr(), mismatches = 0;
	struct page *page;
	unsigned int bad;

	for (index = 0; index < nr; index++) {
		page = ms_lock_slot(index);
		bad = ms_check(page, index);
		ms_unlock_slot(index, page);
		if (bad && mismatches++ < MS_VERIFY_REPORTS)
			pr_warn("page %lu (pfn %lu): %u words differ\n",
				index, page_to_pfn(page), bad);
		cond_resched();
	}
	seq_printf(m, "checked %lu mismatches %lu\n", nr, mismatches);
	return 0;
}

static int ms_verify_open(struct inode *inode, struct file *file)
{
	return single_open(file, ms_verify_show, NULL);
}

static const struct file_operations ms_verify_fops = {
	.owner = THIS_MODULE,
	.open = ms_verify_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
};

/*
 * try_alloc: write "ORDER COUNT" to attempt COUNT allocations of 2^ORDER
 * pages, hold them all, free them; read the outcome of the last attempt.
 *
 * The question is "are there free blocks of that order right now", so the
 * allocations must not create them: no __GFP_DIRECT_RECLAIM (that would
 * reclaim and run direct compaction, which would migrate the very pages
 * being measured) and no __GFP_KSWAPD_RECLAIM (that would wake kswapd and
 * kcompactd to compact in the background). __GFP_NORETRY and __GFP_NOWARN
 * keep a failure quiet and cheap. __GFP_MOVABLE makes the request come from
 * the movable pageblocks the driver's pages sit in.
 */
static ssize_t ms_blocks_write(const char __user *buf, size_t len, gfp_t gfp,
			       struct mutex *serialise)
{
	struct ms_try_result res = { 0 };
	struct page **blocks;
	unsigned long i;
	char *text;
	int fields;

	text = memdup_user_nul(buf, len);
	if (IS_ERR(text))
		return PTR_ERR(text);
	fields = sscanf(text, "%u %lu", &res.order, &res.requested);
	kfree(text);
	if (fields != 2 || res.order > MS_MAX_ORDER || !res.requested ||
	    res.requested > MS_TRY_ALLOC_MAX)
		return -EINVAL;

	blocks = vmalloc(res.requested * sizeof(*blocks));
	if (!blocks)
		return -ENOMEM;
	if (serialise)
		mutex_lock(serialise);
	for (i = 0; i < res.requested; i++) {
		blocks[res.succeeded] = alloc_pages(gfp, res.order);
		if (blocks[res.succeeded])
			res.succeeded++;
	}
	for (i = 0; i < res.succeeded; i++)
		__free_pages(blocks[i], res.order);
	spin_lock(&ms.lock);
	ms.last_try = res;
	spin_unlock(&ms.lock);
	if (serialise)
		mutex_unlock(serialise);
	vfree(blocks);
	return len;
}

static ssize_t ms_try_alloc_write(struct file *file, const char __user *buf,
				  size_t len, loff_t *ppos)
{
	return ms_blocks_write(buf, len, MS_GFP_PROBE, &ms.alloc_lock);
}

/*
 * compact_alloc: like try_alloc, but the allocations may reclaim and compact
 * (MS_GFP_COMPACT): allocation-driven compaction, which vmstat counts as
 * compact_stall. Not serialised, so several CPUs compact at once.
 */
static ssize_t ms_compact_alloc_write(struct file *file,
				      const char __user *buf, size_t len,
				      loff_t *ppos)
{
	return ms_blocks_write(buf, len, MS_GFP_COMPACT, NULL);
}

/* Show the result the file points at: try_alloc, compact_alloc, alloc_order. */
static int ms_result_show(struct seq_file *m, void *v)
{
	struct ms_try_result res;

	spin_lock(&ms.lock);
	res = *(struct ms_try_result *)m->private;
	spin_unlock(&ms.lock);
	seq_printf(m, "order %u requested %lu succeeded %lu\n",
		   res.order, res.requested, res.succeeded);
	return 0;
}

static int ms_result_open(struct inode *inode, struct file *file)
{
	return single_open(file, ms_result_show, inode->i_private);
}

static const struct file_operations ms_try_alloc_fops = {
	.owner = THIS_MODULE,
	.open = ms_result_open,
	.read = seq_read,
	.write = ms_try_alloc_write,
	.llseek = seq_lseek,
	.release = single_release,
};

static const struct file_operations ms_compact_alloc_fops = {
	.owner = THIS_MODULE,
	.open = ms_result_open,
	.read = seq_read,
	.write = ms_compact_alloc_write,
	.llseek = seq_lseek,
	.release = single_release,
};

/*
 * alloc_order: write ORDER to allocate 2^ORDER contiguous pages the way a
 * driver wanting a physically contiguous buffer does, with GFP_KERNEL: the
 * allocator may reclaim and compact memory, and when it still fails it prints
 * its own report ("page allocation failure: order:N, mode:...", the stack,
 * Mem-Info and the free blocks per order). The block is freed at once; read
 * "order <o> requested 1 succeeded <0|1>". Orders up to
 * PAGE_ALLOC_COSTLY_ORDER are refused: for them the allocator retries and
 * calls the OOM killer rather than fail.
 */
static ssize_t ms_alloc_order_write(struct file *file, const char __user *buf,
				    size_t len, loff_t *ppos)
{
	struct ms_try_result res = { .requested = 1 };
	struct page *page;
	int err;

	err = kstrtouint_from_user(buf, len, 0, &res.order);
	if (err)
		return err;
	if (res.order <= PAGE_ALLOC_COSTLY_ORDER || res.order > MS_MAX_ORDER)
		return -EINVAL;
	mutex_lock(&ms.alloc_lock);
	page = alloc_pages(GFP_KERNEL | __GFP_COMP, res.order);
	if (page) {
		res.succeeded = 1;
		__free_pages(page, res.order);
	}
	spin_lock(&ms.lock);
	ms.last_order = res;
	spin_unlock(&ms.lock);
	mutex_unlock(&ms.alloc_lock);
	return len;
}

static const struct file_operations ms_alloc_order_fops = {
	.owner = THIS_MODULE,
	.open = ms_result_open,
	.read = seq_read,
	.write = ms_alloc_order_write,
	.llseek = seq_lseek,
	.release = single_release,
};

/*
 * fill: write K (a power of two, at least 2) to fragment the free memory
 * that loading left whole, the way fragment=K fragments what the driver
 * allocates: while the allocator has a free block of K pages (no reclaim,
 * no compaction, no warning, as try_alloc), take one, keep its first page
 * like every other page of the driver (movable or not) and free the K-1
 * others. Afterwards no free block of K pages or more is left in the zones
 * a movable allocation may use, so only compaction can make one. The pages
 * kept are counted in stats' nr_pages.
 */
static ssize_t ms_fill_write(struct file *file, const char __user *buf,
			     size_t len, loff_t *ppos)
{
	struct page *page;
	unsigned long k, i;
	unsigned int order;
	int err;

	err = kstrtoul_from_user(buf, len, 0, &k);
	if (err)
		return err;
	if (k < 2 || !is_power_of_2(k) || ilog2(k) > MS_MAX_ORDER)
		return -EINVAL;
	order = ilog2(k);
	mutex_lock(&ms.alloc_lock);
	for (;;) {
		err = ms_reserve(ms.nr + 1);
		if (err)
			break;
		page = alloc_pages(MS_GFP_PROBE, order);
		if (!page)
			break;
		split_page(page, order);
		for (i = 1; i < k; i++)
			__free_page(page + i);
		err = ms_keep(page);
		if (err) {
			__free_page(page);
			break;
		}
		cond_resched();
	}
	mutex_unlock(&ms.alloc_lock);
	return err ? err : len;
}

static const struct file_operations ms_fill_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = ms_fill_write,
};

/*
 * inject_eagain_every, inject_fail_every: N (0 = off). Writing either one
 * restarts the count of migrate calls, so after the write exactly every Nth
 * call returns -EAGAIN and every Mth a hard error (-EAGAIN wins when both
 * are due). Every call ends in exactly one of migrated, eagain or failed, so
 * the number of calls is the sum of the three counters.
 */
static int ms_inject_get(void *data, u64 *val)
{
	spin_lock(&ms.lock);
	*val = *(unsigned long *)data;
	spin_unlock(&ms.lock);
	return 0;
}

static int ms_inject_set(void *data, u64 val)
{
	if (val > ULONG_MAX)
		return -EINVAL;
	spin_lock(&ms.lock);
	*(unsigned long *)data = val;
	ms.inject_calls = 0;
	spin_unlock(&ms.lock);
	return 0;
}

DEFINE_DEBUGFS_ATTRIBUTE(ms_inject_fops, ms_inject_get, ms_inject_set,
			 "%llu\n");

/* alloc: write N to keep N more pages, allocated with the current fragment. */
static ssize_t ms_alloc_write(struct file *file, const char __user *buf,
			      size_t len, loff_t *ppos)
{
	unsigned long count;
	int err;

	err = kstrtoul_from_user(buf, len, 0, &count);
	if (!err)
		err = ms_add_pages(count);
	return err ? err : len;
}

static const struct file_operations ms_alloc_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = ms_alloc_write,
};

/*
 * churn: write N to do N churn steps (ms_churn_one()) on pseudo-random
 * logical pages; several writers may churn at once.
 */
static ssize_t ms_churn_write(struct file *file, const char __user *buf,
			      size_t len, loff_t *ppos)
{
	unsigned long count, i, hint, nr = ms_nr();
	int err;

	err = kstrtoul_from_user(buf, len, 0, &count);
	if (err)
		return err;
	if (!nr || count > MS_CHURN_MAX)
		return -EINVAL;
	for (i = 0; i < count; i++) {
		spin_lock(&ms.lock);
		hint = ms_pattern(ms.churn_calls++, 0) % nr;
		spin_unlock(&ms.lock);
		err = ms_churn_one(hint);
		if (err && err != -EAGAIN)
			return err;
		cond_resched();
	}
	return len;
}

static const struct file_operations ms_churn_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = ms_churn_write,
};

static int ms_debugfs_init(void)
{
	struct dentry *dir = debugfs_create_dir("movable_sample", NULL);

	/*
	 * The debugfs files are the driver's whole interface: without them
	 * loading it proves nothing, so fail instead of carrying on.
	 */
	if (IS_ERR_OR_NULL(dir))
		return dir ? PTR_ERR(dir) : -ENOMEM;
	ms.dir = dir;
	debugfs_create_file("pages", 0444, dir, NULL, &ms_pages_fops);
	debugfs_create_file("stats", 0444, dir, NULL, &ms_stats_fops);
	debugfs_create_file("verify", 0444, dir, NULL, &ms_verify_fops);
	debugfs_create_file("try_alloc", 0644, dir, &ms.last_try,
			    &ms_try_alloc_fops);
	debugfs_create_file("alloc_order", 0644, dir, &ms.last_order,
			    &ms_alloc_order_fops);
	debugfs_create_file("fill", 0200, dir, NULL, &ms_fill_fops);
	debugfs_create_file_unsafe("inject_eagain_every", 0644, dir,
				   &ms.inject_eagain_every, &ms_inject_fops);
	debugfs_create_file_unsafe("inject_fail_every", 0644, dir,
				   &ms.inject_fail_every, &ms_inject_fops);
	debugfs_create_file("alloc", 0200, dir, NULL, &ms_alloc_fops);
	debugfs_create_file("compact_alloc", 0644, dir, &ms.last_try,
			    &ms_compact_alloc_fops);
	debugfs_create_file("churn", 0200, dir, NULL, &ms_churn_fops);
	return 0;
}

static int __init ms_init(void)
{
	int err;

	if (!fragment) {
		pr_err("fragment must be at least 1\n");
		return -EINVAL;
	}
	ms_api_init();
	err = ms_add_pages(pages);
	if (!err)
		err = ms_debugfs_init();
	if (err) {
		ms_release_all();
		return err;
	}
	pr_info("%lu pages, movable=%d fragment=%u seed=%lu\n",
		ms.nr, movable, fragment, seed);
	return 0;
}

/*
 * Removing the debugfs files first waits for any read or write in progress
 * (debugfs' file removal protection), so nothing but the VM touches the
 * pages afterwards; ms_release() then handles the VM.
 */
static void __exit ms_exit(void)
{
	debugfs_remove_recursive(ms.dir);
	ms_release_all();
}

module_init(ms_init);
module_exit(ms_exit);

MODULE_DESCRIPTION("Pages of its own that the VM can migrate (non-LRU movable)");
MODULE_LICENSE("GPL");
