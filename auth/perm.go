package auth

// Access is what a caller asks to do with a file or directory: a set of
// Read, Write and Exec (search, for a directory), the bits of a POSIX
// mode's owner triplet.
type Access uint32

// The accesses.
const (
	Exec  Access = 1
	Write Access = 2
	Read  Access = 4
)

// String returns the access as "rwx" letters ("r-x").
func (a Access) String() string {
	b := []byte("---")
	for i, c := range "rwx" {
		if a&(Read>>i) != 0 {
			b[i] = byte(c)
		}
	}
	return string(b)
}

// Allowed reports whether id may have want on a file or directory of
// owner, group and mode (POSIX permission bits), by the POSIX rule that
// HDFS follows: the owner's bits if id is the owner, else the group's if
// id is in group, else the others'; the first class that matches decides,
// even when a later one would allow more. Superusers are not special
// here: the caller checks Superusers.Has first.
func Allowed(id Identity, owner, group string, mode uint32, want Access) bool {
	var bits uint32
	switch {
	case id.User == owner:
		bits = mode >> 6
	case id.InGroup(group):
		bits = mode >> 3
	default:
		bits = mode
	}
	return Access(bits&7)&want == want
}

// FormatMode returns mode (permission bits and the sticky bit 0o1000) as
// ls -l prints it: "-rw-r--r--", "drwxr-xr-x", or "drwxrwxrwt" for a
// sticky directory.
func FormatMode(mode uint32, dir bool) string {
	b := []byte("----------")
	if dir {
		b[0] = 'd'
	}
	for i := range 9 {
		if mode&(1<<(8-i)) != 0 {
			b[1+i] = "rwx"[i%3]
		}
	}
	if mode&0o1000 != 0 {
		if b[9] == 'x' {
			b[9] = 't'
		} else {
			b[9] = 'T'
		}
	}
	return string(b)
}
