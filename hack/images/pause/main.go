// Command pause is the sandbox ("pause") container of the real test node in
// internal/kubetest: it holds the pod's namespaces and does nothing else
// until it is told to stop. hack/images/build.sh builds it statically into
// an image from scratch, because no registry with the upstream pause image
// is reachable from CI.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// As PID 1 of its namespace the pause process adopts orphans; reap
	// them so they do not pile up as zombies.
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			return
		case <-children:
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
