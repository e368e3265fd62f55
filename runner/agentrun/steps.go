package agentrun

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/agentbot/agentbot/internal/gitenv"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/agent"
)

// initScript finds the template's init script: scripts/init.py (python3),
// scripts/init.sh (bash, else sh) or an executable scripts/init.
func (r *run) initScript() (path string, args []string, found bool) {
	dir := filepath.Join(r.ws.RepoDir(), ".task-templates", r.job.Template, "scripts")
	if fileExists(filepath.Join(dir, "init.py")) {
		return "python3", []string{filepath.Join(dir, "init.py")}, true
	}
	if fileExists(filepath.Join(dir, "init.sh")) {
		shell := "sh"
		if hasProgram("bash") {
			shell = "bash"
		}
		return shell, []string{filepath.Join(dir, "init.sh")}, true
	}
	if st, err := os.Stat(filepath.Join(dir, "init")); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return filepath.Join(dir, "init"), nil, true
	}
	return "", nil, false
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func hasProgram(name string) bool {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if st, err := os.Stat(filepath.Join(dir, name)); err == nil && st.Mode()&0o111 != 0 {
			return true
		}
	}
	return false
}

// init runs the template's init script, if the job names a template and the
// repository has one.
func (r *run) init(ctx context.Context) error {
	if r.job.Template == "" {
		return nil
	}
	path, args, found := r.initScript()
	if !found {
		r.emit(runner.Event{Type: runner.EventLog, Message: fmt.Sprintf("template %s has no scripts/init.py, init.sh or init; nothing to initialise", r.job.Template)})
		return nil
	}
	r.startPhase(runner.PhaseInit)
	env := append(r.agentEnv(),
		"AGENTBOT_TEMPLATE="+r.job.Template,
		"AGENTBOT_TEMPLATE_DIR="+filepath.Join(r.ws.RepoDir(), ".task-templates", r.job.Template),
		"AGENTBOT_AGENT="+r.job.Agent.Name,
	)
	res, err := proc{
		Dir:    r.ws.RepoDir(),
		Path:   path,
		Args:   args,
		Env:    env,
		Nested: r.nested,
		Stdout: r.logLine("stdout"),
		Stderr: r.logLine("stderr"),
	}.run(ctx)
	if err != nil {
		return &stepError{code: runner.ExitInit, msg: "template init: " + err.Error(), tail: res.StderrTail}
	}
	if res.ExitCode != 0 {
		return &stepError{code: runner.ExitInit, msg: fmt.Sprintf("template %s init exited with status %d", r.job.Template, res.ExitCode), exitStatus: res.ExitCode, tail: res.StderrTail}
	}
	return nil
}

func (r *run) logLine(stream string) func(string) {
	return func(line string) {
		r.emit(runner.Event{Type: runner.EventLog, Stream: stream, Message: line})
	}
}

// agentEnv is the environment of init and the agent: agent-runner's own,
// without git redirections and without anything holding the token, plus the
// job's Env and agentbot's variables.
func (r *run) agentEnv() []string {
	var env []string
	for _, kv := range gitenv.Clean(r.environ) {
		if r.job.Token != "" && strings.Contains(kv, r.job.Token) {
			continue
		}
		k, _, _ := strings.Cut(kv, "=")
		if _, overridden := r.job.Env[k]; overridden {
			continue
		}
		env = append(env, kv)
	}
	keys := make([]string, 0, len(r.job.Env))
	for k := range r.job.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+r.job.Env[k])
	}
	return append(env,
		"AGENTBOT_TASK_ID="+r.job.TaskID,
		"AGENTBOT_REPO="+r.job.Repo,
		"AGENTBOT_BRANCH="+r.job.Branch,
		"AGENTBOT_ISSUE="+strconv.Itoa(r.job.IssueNumber),
		"AGENTBOT_PROMPT_FILE="+r.ws.PromptFile(),
		"AGENTBOT_SUMMARY_FILE="+r.ws.SummaryFile(),
	)
}

// agent runs the coding agent and returns what it reported.
func (r *run) agent(ctx context.Context) (agent.Report, error) {
	r.startPhase(runner.PhaseAgent)
	if err := os.WriteFile(r.ws.PromptFile(), []byte(composePrompt(r.job)), 0o644); err != nil {
		return agent.Report{}, fail(runner.ExitInternal, "write the prompt: %v", err)
	}
	ad, err := agent.Lookup(r.job.Agent.Name, r.bins)
	if err != nil {
		return agent.Report{}, fail(runner.ExitBadJob, "%v", err)
	}
	req := agent.Request{
		RepoDir:     r.ws.RepoDir(),
		PromptFile:  r.ws.PromptFile(),
		SummaryFile: r.ws.SummaryFile(),
		Spec:        r.job.Agent,
	}
	inv, err := ad.Invocation(req)
	if err != nil {
		return agent.Report{}, fail(runner.ExitBadJob, "%v", err)
	}
	parser := ad.NewParser(req)
	p := proc{
		Dir:    r.ws.RepoDir(),
		Path:   inv.Path,
		Args:   inv.Args,
		Env:    r.agentEnv(),
		Nested: r.nested,
		Stdout: func(line string) {
			for _, o := range parser.Line(line) {
				ev := runner.Event{Type: o.Type, Message: o.Message, Tool: o.Tool, File: o.File}
				if o.Type == runner.EventLog {
					ev.Stream = "stdout"
				}
				r.emit(ev)
			}
		},
		Stderr: r.logLine("stderr"),
	}
	if inv.StdinPromptFile {
		p.Stdin = r.ws.PromptFile()
	}
	r.log.Info("agent-runner starts the agent", "phase", runner.PhaseAgent, "agent", ad.Name(), "path", inv.Path)
	res, err := p.run(ctx)
	rep := parser.Report()
	if err != nil {
		return rep, &stepError{code: runner.ExitAgent, msg: fmt.Sprintf("agent %s: %v", ad.Name(), err), tail: res.StderrTail}
	}
	if res.ExitCode != 0 {
		msg := fmt.Sprintf("agent %s exited with status %d", ad.Name(), res.ExitCode)
		if rep.Reason != "" {
			msg += " (" + rep.Reason + ")"
		}
		return rep, &stepError{code: runner.ExitAgent, msg: msg, exitStatus: res.ExitCode, tail: res.StderrTail}
	}
	if rep.Failed {
		return rep, &stepError{code: runner.ExitAgent, msg: fmt.Sprintf("agent %s failed: %s", ad.Name(), rep.Reason), tail: res.StderrTail}
	}
	return rep, nil
}
