//go:build !ctnet_crashpoints

package fault

// Point marks one crash point passed; without BuildTag it is a crash point of
// nothing, and compiles to nothing.
func Point(name string) {}
