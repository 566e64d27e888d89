// Package fault is the crash-test hook: in a build made with the build tag
// ctnet_crashpoints (BuildTag), and with CTNET_TEST_KILL_AFTER=k in the
// environment, the process kills itself with SIGKILL right after its k-th crash
// point (a kernel change, or the store's commit), so tests can check that every
// crash point leaves a state gc can repair. With CTNET_TEST_KILL_MARKER=PATH as
// well, it first appends "k NAME" to PATH and syncs it: the test then knows that its
// kill, and not a hang ended by a timeout, stopped the process, and at which step.
//
// Without the tag Point does nothing and the variables are never read: a runtime
// that imports ctnet's library must not be killable through its environment.
// internal/lab builds the ctnet the end-to-end tests run with the tag.
package fault

// BuildTag is the build tag that compiles the crash points in.
const BuildTag = "ctnet_crashpoints"

// EnvKillAfter is the environment variable that arms the hook of a build with
// BuildTag.
const EnvKillAfter = "CTNET_TEST_KILL_AFTER"

// EnvKillMarker names the file an armed hook appends the step it kills at to.
const EnvKillMarker = "CTNET_TEST_KILL_MARKER"
