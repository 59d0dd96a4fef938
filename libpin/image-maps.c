// SPDX-License-Identifier: MIT
/*
 * The mappings of /proc/PID/maps a checkpoint takes (private, readable, not
 * the kernel's special ones; anonymous and writable unless the flags widen
 * it), clipped to the range asked for.  Calls only the log.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "libpin-private.h"

static bool special_mapping(const char *name)
{
	static const char *const names[] = { "[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]",
					     "[uprobes]" };

	for (size_t i = 0; i < PIN_ARRAY_SIZE(names); i++)
		if (!strcmp(name, names[i]))
			return true;
	return false;
}

/*
 * One line of /proc/PID/maps.  Returns 1 and *m when it is a mapping to
 * take, 0 when not, -EBADMSG when the line does not parse.
 */
static int parse_maps_line(char *line, unsigned int flags, struct pin_image_mapping *m)
{
	uint64_t start, end, inode;
	char perms[5], *name;
	int pos = -1;
	bool anon;

	if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %*x %*s %" SCNu64 " %n", &start, &end, perms,
		   &inode, &pos) != 4 ||
	    pos < 0 || strlen(perms) != 4)
		return -EBADMSG;
	name = line + pos;
	name[strcspn(name, "\n")] = '\0';
	anon = inode == 0 && (name[0] == '\0' || name[0] == '[');
	/* Unreadable (PROT_NONE guards) and shared mappings are not ours to copy. */
	if (perms[0] != 'r' || perms[3] != 'p' || special_mapping(name))
		return 0;
	if (!anon && !(flags & PIN_IMAGE_WRITE_FILE))
		return 0;
	if (perms[1] != 'w' && !(flags & PIN_IMAGE_WRITE_READONLY))
		return 0;
	*m = (struct pin_image_mapping){
		.start = start,
		.end = end,
		.prot = PROT_READ | (perms[1] == 'w' ? PROT_WRITE : 0) |
			(perms[2] == 'x' ? PROT_EXEC : 0),
		.flags = MAP_PRIVATE | (anon ? MAP_ANONYMOUS : 0) |
			 (!strcmp(name, "[stack]") ? MAP_GROWSDOWN : 0),
		.name = name,
	};
	return 1;
}

void pin_image_free_mappings(struct pin_image_mapping *maps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(maps[i].name);
		free(maps[i].held);
	}
	free(maps);
}

/* Clip m to [addr, addr + len); false when nothing is left. */
static bool clip(struct pin_image_mapping *m, uint64_t addr, uint64_t len)
{
	uint64_t end = addr + len;

	if (!len)
		return true;
	if (m->end <= addr || m->start >= end)
		return false;
	if (m->start < addr)
		m->start = addr;
	if (m->end > end)
		m->end = end;
	return true;
}

int pin_image_read_maps(int pid, const struct pin_image_write_opts *o,
			struct pin_image_mapping **ret, size_t *ret_n)
{
	char path[64], *line = NULL;
	size_t linesz = 0, n = 0, cap = 0, lineno = 0;
	struct pin_image_mapping *maps = NULL;
	FILE *f;
	int r = 0;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f) {
		r = -errno;
		pin_log(PIN_LOG_ERR, "open %s: %s", path, strerror(errno));
		return r;
	}
	while (getline(&line, &linesz, f) > 0) {
		struct pin_image_mapping m;

		lineno++;
		r = parse_maps_line(line, o->flags, &m);
		if (r < 0) {
			pin_log(PIN_LOG_ERR, "%s line %zu does not parse", path, lineno);
			break;
		}
		if (!r || !clip(&m, o->addr, o->len))
			continue;
		if (n == cap) {
			size_t c = cap ? 2 * cap : 32;
			struct pin_image_mapping *nm = reallocarray(maps, c, sizeof(*nm));

			if (!nm) {
				r = -ENOMEM;
				break;
			}
			maps = nm;
			cap = c;
		}
		m.name = strdup(m.name);
		if (!m.name) {
			r = -ENOMEM;
			break;
		}
		maps[n++] = m;
		r = 0;
	}
	if (!r && ferror(f)) {
		r = -EIO;
		pin_log(PIN_LOG_ERR, "read %s: %s", path, strerror(EIO));
	}
	free(line);
	fclose(f);
	if (r < 0) {
		pin_image_free_mappings(maps, n);
		return r;
	}
	*ret = maps;
	*ret_n = n;
	return 0;
}
