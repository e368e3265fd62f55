package doctor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/agentbot/agentbot/runner/sandbox"
)

// Local describes the local launcher's setup.
type Local struct {
	// Isolation is auto, gvisor, bwrap or none.
	Isolation string
	// AgentCLI is the agent's executable ("claude", or the command agent's
	// first word); AgentRunner agent-runner's path.
	AgentCLI, AgentRunner string
	// CgroupRoot is the cgroup v2 mount (default /sys/fs/cgroup).
	CgroupRoot string
}

// LocalChecks are git, the sandbox, agent-runner, the agent CLI and the
// cgroup controllers, all cheap.
func LocalChecks(l Local) []Check {
	root := l.CgroupRoot
	if root == "" {
		root = "/sys/fs/cgroup"
	}
	return []Check{
		{Name: "git", Cheap: true, Run: func(ctx context.Context) (string, error) {
			out, err := exec.CommandContext(ctx, "git", "--version").Output()
			if err != nil {
				return "", problem("install git (Debian package git)", "git does not run: %v", err)
			}
			return strings.TrimSpace(string(out)), nil
		}},
		{Name: "sandbox", Cheap: true, Run: func(ctx context.Context) (string, error) {
			if l.Isolation == "none" {
				return "none (AGENTBOT_LOCAL_ISOLATION=none: agents run unconfined)", nil
			}
			if l.Isolation == "gvisor" || l.Isolation == "auto" {
				err := runscWorks(ctx)
				if err == nil {
					return "gVisor (runsc) works", nil
				}
				if l.Isolation == "gvisor" {
					return "", problem("install runsc (Debian package runsc), or set AGENTBOT_LOCAL_ISOLATION=bwrap", "runsc does not work here: %v", err)
				}
			}
			if err := bwrapWorks(ctx); err != nil {
				fix := "install bubblewrap (Debian package bubblewrap) and allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1), or use the Kubernetes launcher"
				if l.Isolation == "auto" {
					return "", problem(fix+"; AGENTBOT_LOCAL_ISOLATION=none runs agents unconfined", "bubblewrap does not work here, so agents would run unconfined: %v", err)
				}
				return "", problem(fix, "bubblewrap does not work here: %v", err)
			}
			return "bubblewrap works", nil
		}},
		{Name: "agent-runner", Cheap: true, Run: func(context.Context) (string, error) {
			if l.AgentRunner == "" {
				return "", problem("build it (go build -o bin/ ./cmd/...) next to agentbot, or set AGENTBOT_AGENT_RUNNER", "agent-runner not found")
			}
			if _, err := exec.LookPath(l.AgentRunner); err != nil {
				return "", problem("set AGENTBOT_AGENT_RUNNER to the agent-runner binary", "agent-runner %s: %v", l.AgentRunner, err)
			}
			return l.AgentRunner, nil
		}},
		{Name: "agent CLI", Cheap: true, Run: func(context.Context) (string, error) {
			p, err := exec.LookPath(l.AgentCLI)
			if err != nil {
				return "", problem(fmt.Sprintf("install %s on PATH (claude: npm install -g @anthropic-ai/claude-code)", l.AgentCLI), "agent CLI %q not found: %v", l.AgentCLI, err)
			}
			return p, nil
		}},
		{Name: "cgroup limits", Cheap: true, Run: func(context.Context) (string, error) {
			b, err := os.ReadFile(root + "/cgroup.controllers")
			if err != nil {
				// cgroup v1: the launcher uses the memory, pids and cpu
				// controllers, each mounted under root.
				if lack := missingV1(root); len(lack) > 0 {
					return "", problem("run on a host with cgroup v2 mounted at "+root+", or v1 memory, pids and cpu controllers", "no cgroup v2 at %s, and v1 lacks %s", root, strings.Join(lack, ", "))
				}
				return "cgroup v1 memory, pids, cpu", nil
			}
			have := strings.Fields(string(b))
			var lack []string
			for _, c := range []string{"cpu", "memory", "pids"} {
				if !slices.Contains(have, c) {
					lack = append(lack, c)
				}
			}
			if len(lack) > 0 {
				return "", problem("enable the controllers for agentbot's cgroup (systemd: Delegate=yes in its unit)", "cgroup controllers missing: %s", strings.Join(lack, ", "))
			}
			return "cpu, memory, pids", nil
		}},
	}
}

// missingV1 names the cgroup v1 controllers (of those the launcher uses)
// not mounted under root.
func missingV1(root string) []string {
	var lack []string
	for _, c := range []string{"memory", "pids", "cpu"} {
		if fi, err := os.Stat(root + "/" + c + "/tasks"); err != nil || fi.IsDir() {
			lack = append(lack, c)
		}
	}
	return lack
}

// runscWorks runs `true` under gVisor the way the launcher does.
func runscWorks(ctx context.Context) error {
	p, err := exec.LookPath("runsc")
	if err != nil {
		return fmt.Errorf("runsc is not installed")
	}
	dir, err := os.MkdirTemp("", "agentbot-doctor-runsc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	return sandbox.Runsc{Path: p, StateDir: dir}.Probe(ctx)
}

// bwrapWorks runs bwrap with the namespaces the local launcher asks for.
func bwrapWorks(ctx context.Context) error {
	p, err := exec.LookPath("bwrap")
	if err != nil {
		return fmt.Errorf("bwrap is not installed")
	}
	out, err := exec.CommandContext(ctx, p, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
		"--tmpfs", "/tmp", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
		"--cap-drop", "ALL", "--", "true").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
