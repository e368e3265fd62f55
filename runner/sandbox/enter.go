package sandbox

// CanEnter reports why uid:gid (without capabilities) may not walk from /
// to dir, nil when it may: a bind source the plan cannot show fails
// NewPlan, so a caller with an optional path (the repository mirror)
// leaves it out instead.
func CanEnter(dir string, uid, gid int) error { return searchable(dir, uid, gid) }
