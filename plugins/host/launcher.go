package host

import (
	"runtime"
	"sync"
)

// The parent-death signal is tied to the OS thread that forked the child, not to the process: if that
// thread exited, the plugin would be killed with it. Go keeps idle threads, but a goroutine that exits while
// locked takes its thread along, so plugins are started from one goroutine locked to its thread for the life
// of the process.
var (
	launchOnce sync.Once
	launches   chan func()
)

// onLauncherThread runs f on the launcher thread and waits for it.
func onLauncherThread(f func()) {
	launchOnce.Do(func() {
		launches = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread must outlive every plugin
			for f := range launches {
				f()
			}
		}()
	})
	done := make(chan struct{})
	launches <- func() { defer close(done); f() }
	<-done
}
