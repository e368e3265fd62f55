package agentrun

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentbot/agentbot/internal/testtool"
	"github.com/agentbot/agentbot/runner"
)

// bundleHeader reads a bundle's prerequisites and refs.
func bundleHeader(t *testing.T, path string) (prereqs []string, refs map[string]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	refs = map[string]string{}
	br := bufio.NewReader(f)
	first, _ := br.ReadString('\n')
	if !strings.HasPrefix(first, "# v2 git bundle") && !strings.HasPrefix(first, "# v3 git bundle") {
		t.Fatalf("not a bundle: %q", first)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("bundle header: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			return prereqs, refs
		case strings.HasPrefix(line, "@"):
		case strings.HasPrefix(line, "-"):
			sha, _, _ := strings.Cut(line[1:], " ")
			prereqs = append(prereqs, sha)
		default:
			sha, ref, _ := strings.Cut(line, " ")
			refs[ref] = sha
		}
	}
}

// applyBundle fetches the bundle's branch into a fresh bare copy of the
// server's repository, as the bot does before pushing, and returns the
// copy's path.
func applyBundle(t *testing.T, f *fixture, bundle, branch string) string {
	t.Helper()
	bot := filepath.Join(t.TempDir(), "bot.git")
	testtool.Git(t, "", "clone", "-q", "--bare", f.srv.BarePath(owner, repoName), bot)
	testtool.Git(t, bot, "bundle", "verify", "-q", bundle)
	testtool.Git(t, bot, "fetch", "-q", bundle, "refs/heads/"+branch+":refs/heads/"+branch)
	return bot
}

func TestRunNewTask(t *testing.T) {
	f := newFixture(t)
	job := f.job("Please add a greeting.\n\nscripted: write hello.txt hello world; append README.md more; write debug.log ignored; summary Added hello.txt\nscripted: stdout done editing")
	o := runJob(t, t.Context(), job)
	if o.code != runner.ExitOK {
		t.Fatalf("exit %d, want 0", o.code)
	}
	if got, want := o.phases(), []string{"cloning", "agent", "committing", "bundling"}; !slices.Equal(got, want) {
		t.Errorf("phases = %v, want %v", got, want)
	}
	res := o.result(t)
	if res.Status != runner.StatusSucceeded || res.Branch != job.Branch || res.BaseSHA != f.base {
		t.Errorf("result = %+v, want succeeded on %s from %s", res, job.Branch, f.base)
	}
	if res.Summary != "Added hello.txt" {
		t.Errorf("summary = %q", res.Summary)
	}
	wantFiles := []runner.FileChange{{Path: "README.md", Added: 1}, {Path: "hello.txt", Added: 1}}
	if !slices.Equal(res.Files, wantFiles) {
		t.Errorf("files = %+v, want %+v (debug.log is ignored)", res.Files, wantFiles)
	}
	for _, p := range []string{"cloning", "agent", "committing", "bundling"} {
		if _, ok := res.PhaseSeconds[p]; !ok {
			t.Errorf("phase_seconds has no %s: %v", p, res.PhaseSeconds)
		}
	}
	if res.BundlePath != o.ws.BundleFile() {
		t.Errorf("bundle_path = %q", res.BundlePath)
	}
	if !strings.Contains(o.logs(), "done editing") {
		t.Errorf("the agent's stdout is not in the log events:\n%s", o.logs())
	}

	if got := testtool.Git(t, o.ws.RepoDir(), "config", "remote.origin.partialclonefilter"); got != "blob:none" {
		t.Errorf("the clone is not partial: filter %q", got)
	}
	prereqs, refs := bundleHeader(t, o.ws.BundleFile())
	if !slices.Equal(prereqs, []string{f.base}) || refs["refs/heads/"+job.Branch] != res.Commit || len(refs) != 1 {
		t.Errorf("bundle: prerequisites %v refs %v; want [%s] and %s at %s", prereqs, refs, f.base, job.Branch, res.Commit)
	}
	bot := applyBundle(t, f, o.ws.BundleFile(), job.Branch)
	if got := testtool.Git(t, bot, "show", res.Commit+":hello.txt"); got != "hello world" {
		t.Errorf("hello.txt = %q", got)
	}
	if got := testtool.Git(t, bot, "log", "-1", "--format=%an <%ae>|%s|%b", res.Commit); !strings.HasPrefix(got, "agentbot[bot] <agentbot@example.com>|Add hello (#7)|") || !strings.Contains(got, "Agentbot-Task: task-1") {
		t.Errorf("commit = %q", got)
	}
	if got := testtool.Git(t, bot, "rev-parse", res.Commit+"^"); got != f.base {
		t.Errorf("parent of the commit = %s, want base %s", got, f.base)
	}
	if got := f.srv.Branches(owner, repoName); !slices.Equal(got, []string{"main"}) {
		t.Errorf("server branches = %v: agent-runner must never push", got)
	}
}

func TestRunFollowUp(t *testing.T) {
	f := newFixture(t)
	branch := "agentbot/issue-7-add-hello"
	oldHead := f.pushBranch(t, branch, map[string]string{"hello.txt": "hello\n"})
	job := f.job("")
	job.FollowUp = true
	job.ExpectedHeadSHA = oldHead
	job.Branch = branch
	job.BaseBranch = ""
	job.Prompt.Instructions = "Also say goodbye.\nscripted: append hello.txt goodbye"
	job.Prompt.ReviewComments = []string{"hello.txt: needs a goodbye"}

	o := runJob(t, t.Context(), job)
	if o.code != runner.ExitOK {
		t.Fatalf("exit %d", o.code)
	}
	res := o.result(t)
	if res.BaseSHA != oldHead || res.Commit == oldHead || res.Status != runner.StatusSucceeded {
		t.Fatalf("result = %+v; want base %s (the old head) and a new commit", res, oldHead)
	}
	if want := []runner.FileChange{{Path: "hello.txt", Added: 1}}; !slices.Equal(res.Files, want) {
		t.Errorf("files = %+v, want %+v", res.Files, want)
	}
	prereqs, refs := bundleHeader(t, o.ws.BundleFile())
	if !slices.Equal(prereqs, []string{oldHead}) || refs["refs/heads/"+branch] != res.Commit {
		t.Errorf("bundle: prerequisites %v refs %v", prereqs, refs)
	}
	bot := applyBundle(t, f, o.ws.BundleFile(), branch)
	if got := testtool.Git(t, bot, "show", res.Commit+":hello.txt"); got != "hello\ngoodbye" {
		t.Errorf("hello.txt = %q", got)
	}
	if got := testtool.Git(t, bot, "log", "-1", "--format=%s", res.Commit); got != "Follow-up: Also say goodbye. (#7)" {
		t.Errorf("subject = %q", got)
	}
}

func TestRunFollowUpRefusesMovedBranch(t *testing.T) {
	f := newFixture(t)
	branch := "agentbot/issue-7-add-hello"
	f.pushBranch(t, branch, map[string]string{"hello.txt": "someone else's\n"})
	job := f.job("scripted: write x.txt x")
	job.FollowUp = true
	job.Branch = branch
	job.ExpectedHeadSHA = f.base // the head agentbot last saw; the branch moved since

	o := runJob(t, t.Context(), job)
	if o.code != runner.ExitClone {
		t.Fatalf("exit %d, want %d", o.code, runner.ExitClone)
	}
	ev := o.errorEvent(t)
	if ev.Phase != runner.PhaseCloning || !strings.Contains(ev.Message, "moved") || !strings.Contains(ev.Message, f.base) {
		t.Errorf("error event = %+v", ev)
	}
	if slices.Contains(o.phases(), runner.PhaseAgent) {
		t.Error("the agent ran on a moved branch")
	}
}

func TestRunTemplateInit(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		mode      os.FileMode
		wantCode  int
		wantInit  bool
		wantFile  string // a file the init wrote that the agent's commit carries
		wantTail  string
		wantError string
	}{
		{
			name:     "init.sh prepares the tree",
			files:    map[string]string{".task-templates/go/scripts/init.sh": "echo preparing\necho \"$AGENTBOT_TEMPLATE\" > prepared.txt\n"},
			wantCode: runner.ExitOK, wantInit: true, wantFile: "prepared.txt",
		},
		{
			name:     "init.py wins over init.sh",
			files:    map[string]string{".task-templates/go/scripts/init.py": "open('prepared.txt','w').write('py\\n')\n", ".task-templates/go/scripts/init.sh": "exit 1\n"},
			wantCode: runner.ExitOK, wantInit: true, wantFile: "prepared.txt",
		},
		{
			name:     "executable init",
			files:    map[string]string{".task-templates/go/scripts/init": "#!/bin/sh\necho x > prepared.txt\n"},
			mode:     0o755,
			wantCode: runner.ExitOK, wantInit: true, wantFile: "prepared.txt",
		},
		{
			name:     "init failure fails the task with its output",
			files:    map[string]string{".task-templates/go/scripts/init.sh": "echo 'npm ERR! missing package' >&2\nexit 3\n"},
			wantCode: runner.ExitInit, wantInit: true, wantTail: "npm ERR! missing package", wantError: "exited with status 3",
		},
		{
			name:     "no init script: nothing to do",
			files:    map[string]string{".task-templates/other/scripts/init.sh": "exit 1\n"},
			wantCode: runner.ExitOK,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			branch := "with-template"
			head := f.pushBranch(t, branch, tc.files)
			if tc.mode != 0 {
				// pushBranch writes 0644; make init executable in a second commit.
				work := t.TempDir()
				testtool.Git(t, "", "clone", "-q", "--branch", branch, f.srv.BarePath(owner, repoName), work)
				testtool.Git(t, work, "update-index", "--chmod=+x", ".task-templates/go/scripts/init")
				testtool.Git(t, work, "-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "chmod")
				testtool.Git(t, work, "push", "-q", "origin", "HEAD:refs/heads/"+branch)
				head = f.srv.RevParse(owner, repoName, branch)
			}
			job := f.job("scripted: write agent.txt by the agent")
			job.BaseBranch = branch
			job.Template = "go"
			o := runJob(t, t.Context(), job)
			if o.code != tc.wantCode {
				t.Fatalf("exit %d, want %d", o.code, tc.wantCode)
			}
			if got := slices.Contains(o.phases(), runner.PhaseInit); got != tc.wantInit {
				t.Errorf("init phase ran = %v, want %v (%v)", got, tc.wantInit, o.phases())
			}
			if tc.wantCode != runner.ExitOK {
				ev := o.errorEvent(t)
				if ev.Phase != runner.PhaseInit || !strings.Contains(ev.Message, tc.wantError) || !slices.Contains(ev.StderrTail, tc.wantTail) {
					t.Errorf("error event = %+v", ev)
				}
				if slices.Contains(o.phases(), runner.PhaseAgent) {
					t.Error("the agent ran after a failed init")
				}
				return
			}
			res := o.result(t)
			if res.BaseSHA != head {
				t.Errorf("base = %s, want %s", res.BaseSHA, head)
			}
			var paths []string
			for _, fc := range res.Files {
				paths = append(paths, fc.Path)
			}
			want := []string{"agent.txt"}
			if tc.wantFile != "" {
				want = append(want, tc.wantFile)
			}
			slices.Sort(want)
			if !slices.Equal(paths, want) {
				t.Errorf("files = %v, want %v", paths, want)
			}
		})
	}
}

func TestRunAgentOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantCode  int
		wantPhase string
		wantMsg   string
		wantTail  string
		wantExit  int
		check     func(t *testing.T, f *fixture, o outcome)
	}{
		{
			name:     "failure carries the stderr tail",
			body:     "scripted: stderr compiling; stdout some output; fail 3 error: something broke",
			wantCode: runner.ExitAgent, wantPhase: runner.PhaseAgent, wantMsg: "exited with status 3", wantTail: "error: something broke", wantExit: 3,
		},
		{
			name:     "no changes",
			body:     "scripted: stdout nothing to do here; summary Nothing needed changing",
			wantCode: runner.ExitOK,
			check: func(t *testing.T, f *fixture, o outcome) {
				res := o.result(t)
				if res.Status != runner.StatusNoChanges || res.Commit != "" || res.BundlePath != "" || res.BaseSHA != f.base || res.Summary != "Nothing needed changing" {
					t.Errorf("result = %+v", res)
				}
				if _, err := os.Stat(o.ws.BundleFile()); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a bundle exists without changes: %v", err)
				}
				if slices.Contains(o.phases(), runner.PhaseBundling) {
					t.Error("bundling ran without changes")
				}
				var buf bytes.Buffer
				if err := WriteBundle(o.ws, &buf); !errors.Is(err, ErrNoBundle) {
					t.Errorf("WriteBundle = %v, want ErrNoBundle", err)
				}
			},
		},
		{
			name:     "ignored files only are no changes",
			body:     "scripted: write build.log noise",
			wantCode: runner.ExitOK,
			check: func(t *testing.T, f *fixture, o outcome) {
				if res := o.result(t); res.Status != runner.StatusNoChanges {
					t.Errorf("result = %+v", res)
				}
			},
		},
		{
			name:     "the agent's own commits are kept",
			body:     "scripted: write a.txt one; commit agent commit one; write b.txt two",
			wantCode: runner.ExitOK,
			check: func(t *testing.T, f *fixture, o outcome) {
				res := o.result(t)
				bot := applyBundle(t, f, o.ws.BundleFile(), "agentbot/issue-7-add-hello")
				log := testtool.Git(t, bot, "log", "--format=%s", f.base+".."+res.Commit)
				if log != "Add hello (#7)\nagent commit one" {
					t.Errorf("log = %q", log)
				}
				if len(res.Files) != 2 {
					t.Errorf("files = %+v", res.Files)
				}
			},
		},
		{
			name:     "only the agent's own commit",
			body:     "scripted: write a.txt one; commit agent did it",
			wantCode: runner.ExitOK,
			check: func(t *testing.T, f *fixture, o outcome) {
				res := o.result(t)
				bot := applyBundle(t, f, o.ws.BundleFile(), "agentbot/issue-7-add-hello")
				if log := testtool.Git(t, bot, "log", "--format=%s", f.base+".."+res.Commit); log != "agent did it" {
					t.Errorf("log = %q", log)
				}
			},
		},
		{
			name:     "workflow files are bundled (the bot refuses them, not the runner)",
			body:     "scripted: write .github/workflows/evil.yml on: push",
			wantCode: runner.ExitOK,
			check: func(t *testing.T, f *fixture, o outcome) {
				if res := o.result(t); len(res.Files) != 1 || res.Files[0].Path != ".github/workflows/evil.yml" {
					t.Errorf("files = %+v", res.Files)
				}
			},
		},
		{
			name:     "switching branches is refused",
			body:     "scripted: git checkout -q -b elsewhere; write a.txt x",
			wantCode: runner.ExitCommit, wantPhase: runner.PhaseCommitting, wantMsg: `"elsewhere"`,
		},
		{
			name:     "rewriting the base is refused",
			body:     "scripted: write a.txt x; git add -A; git commit -q --amend -m rewritten",
			wantCode: runner.ExitCommit, wantPhase: runner.PhaseCommitting, wantMsg: "rewrote history",
		},
		{
			name:     "a missing agent program fails the agent phase",
			body:     "",
			wantCode: runner.ExitAgent, wantPhase: runner.PhaseAgent, wantMsg: "cannot start",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			job := f.job(tc.body)
			if tc.name == "a missing agent program fails the agent phase" {
				job.Agent.Command = filepath.Join(t.TempDir(), "no-such-agent")
			}
			o := runJob(t, t.Context(), job)
			if o.code != tc.wantCode {
				t.Fatalf("exit %d, want %d", o.code, tc.wantCode)
			}
			if tc.wantPhase != "" {
				ev := o.errorEvent(t)
				if ev.Phase != tc.wantPhase || !strings.Contains(ev.Message, tc.wantMsg) || ev.ExitCode != tc.wantExit {
					t.Errorf("error event = %+v; want phase %s, message with %q, exit code %d", ev, tc.wantPhase, tc.wantMsg, tc.wantExit)
				}
				if tc.wantTail != "" && !slices.Contains(ev.StderrTail, tc.wantTail) {
					t.Errorf("stderr tail %q lacks %q", ev.StderrTail, tc.wantTail)
				}
				if o.last(runner.EventResult) != nil {
					t.Error("a failed run has a result event")
				}
			}
			if tc.check != nil {
				tc.check(t, f, o)
			}
		})
	}
}

func TestRunTimeLimitKillsProcessGroup(t *testing.T) {
	f := newFixture(t)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	job := f.job("scripted: spawn-sleeper " + pidFile + " 300; stdout started; sleep 300")
	// Long enough for the clone on a busy machine, short enough for a test.
	job.TimeLimit = runner.Duration(5 * time.Second)
	o := runJob(t, t.Context(), job)
	if o.code != runner.ExitTimeout {
		t.Fatalf("exit %d, want %d", o.code, runner.ExitTimeout)
	}
	ev := o.errorEvent(t)
	if ev.Phase != runner.PhaseAgent || !strings.Contains(ev.Message, "time limit of 5s") {
		t.Errorf("error event = %+v", ev)
	}
	waitGone(t, readPid(t, pidFile))
}

func TestRunCancelKillsTheAgent(t *testing.T) {
	f := newFixture(t)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	job := f.job("scripted: spawn-sleeper " + pidFile + " 300; sleep 300")
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	go func() {
		// Cancel once the agent's child runs and its pid is written whole
		// (the file exists a moment before its content does).
		for ctx.Err() == nil {
			if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
				cancel(ErrCancelled)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	o := runJob(t, ctx, job)
	if o.code != runner.ExitCancelled {
		t.Fatalf("exit %d, want %d", o.code, runner.ExitCancelled)
	}
	if ev := o.errorEvent(t); ev.Phase != runner.PhaseAgent || !strings.Contains(ev.Message, "cancelled") {
		t.Errorf("error event = %+v", ev)
	}
	waitGone(t, readPid(t, pidFile))
}

// TestTokenNeverLeaks runs a task whose agent dumps its environment and
// prints the job's secret, then looks for the token everywhere.
func TestTokenNeverLeaks(t *testing.T) {
	f := newFixture(t)
	outside := t.TempDir()
	envDump := filepath.Join(outside, "agent.env")
	job := f.job("scripted: dump-env " + envDump + "; stdout-env MODEL_API_KEY; stderr key is sk-model-SECRET-42; write a.txt x")
	job.Env = map[string]string{"MODEL_API_KEY": "sk-model-SECRET-42", "SHORT": "1"}
	job.Template = "t"
	f.pushBranch(t, "tpl", map[string]string{".task-templates/t/scripts/init.sh": "env > " + filepath.Join(outside, "init.env") + "\n"})
	job.BaseBranch = "tpl"
	// Even an environment that carries the token (it never should) does
	// not hand it to the agent.
	environ := append(os.Environ(), "LEAKY="+testToken)
	o := runJobIn(t, t.Context(), Workspace{Dir: t.TempDir()}, job, environ)
	if o.code != runner.ExitOK {
		t.Fatalf("exit %d", o.code)
	}

	header := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + testToken))
	secrets := []string{testToken, header, "sk-model-SECRET-42"}
	check := func(what string, data []byte) {
		t.Helper()
		for _, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s contains a secret (%.8s…)", what, s)
			}
		}
	}
	check("stdout events", o.stdout)
	if !bytes.Contains(o.stdout, []byte("MODEL_API_KEY=[REDACTED]")) || !bytes.Contains(o.stdout, []byte("key is [REDACTED]")) {
		t.Errorf("the secret was not redacted where the agent printed it:\n%s", o.stdout)
	}

	agentEnv, err := os.ReadFile(envDump)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{testToken, header} {
		if bytes.Contains(agentEnv, []byte(s)) {
			t.Errorf("the agent's environment holds the token")
		}
	}
	for _, k := range []string{"GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0", "LEAKY"} {
		if bytes.Contains(agentEnv, []byte(k+"=")) {
			t.Errorf("the agent's environment has %s", k)
		}
	}
	if !bytes.Contains(agentEnv, []byte("MODEL_API_KEY=sk-model-SECRET-42")) || !bytes.Contains(agentEnv, []byte("AGENTBOT_PROMPT_FILE=")) {
		t.Errorf("the agent's environment lacks the job's env or agentbot's variables:\n%s", agentEnv)
	}
	initEnv, err := os.ReadFile(filepath.Join(outside, "init.env"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(initEnv, []byte(testToken)) || bytes.Contains(initEnv, []byte(header)) {
		t.Error("the init script's environment holds the token")
	}

	// Every file in the workspace: .git/config, the prompt, the events,
	// the bundle, the work tree.
	err = filepath.WalkDir(o.ws.Dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range []string{testToken, header} {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s holds the token", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(o.ws.RepoDir(), ".git", "config"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "url = " + job.CloneURL + "\n"; !bytes.Contains(cfg, []byte(want)) {
		t.Errorf(".git/config lacks the plain remote URL %q:\n%s", want, cfg)
	}
}

// TestGitTraceNeverSeesTheToken: git's trace variables in agent-runner's
// environment (an operator debugging) must not make git write the
// Authorization header to a trace file or to standard error.
func TestGitTraceNeverSeesTheToken(t *testing.T) {
	f := newFixture(t)
	trace := filepath.Join(t.TempDir(), "trace")
	environ := append(os.Environ(), "GIT_TRACE_CURL="+trace+".curl", "GIT_TRACE_REDACT=0",
		"GIT_TRACE="+trace+".cmd", "GIT_TRACE2_EVENT="+trace+".event", "GIT_TRACE_PACKET="+trace+".packet")
	o := runJobIn(t, t.Context(), Workspace{Dir: t.TempDir()}, f.job("scripted: write a.txt x"), environ)
	if o.code != runner.ExitOK {
		t.Fatalf("exit %d", o.code)
	}
	header := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + testToken))
	for _, ext := range []string{".curl", ".cmd", ".event", ".packet"} {
		data, err := os.ReadFile(trace + ext)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(header)) || bytes.Contains(data, []byte(testToken)) {
			t.Errorf("git's trace %s holds the token", ext)
		}
	}
	if bytes.Contains(o.stdout, []byte(header)) {
		t.Error("the events hold the token")
	}
}

func TestRunCloneFailures(t *testing.T) {
	tests := []struct {
		name   string
		modify func(j *runner.Job)
	}{
		{"wrong token", func(j *runner.Job) { j.Token = "ghs_wrong-token-value" }},
		{"no token", func(j *runner.Job) { j.Token = "" }},
		{"missing base branch", func(j *runner.Job) { j.BaseBranch = "nope" }},
		{"missing follow-up branch", func(j *runner.Job) {
			j.FollowUp = true
			j.ExpectedHeadSHA = strings.Repeat("a", 40)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			job := f.job("scripted: write a.txt x")
			tc.modify(&job)
			o := runJob(t, t.Context(), job)
			if o.code != runner.ExitClone {
				t.Fatalf("exit %d, want %d", o.code, runner.ExitClone)
			}
			ev := o.errorEvent(t)
			if ev.Phase != runner.PhaseCloning || ev.ExitCode == 0 || len(ev.StderrTail) == 0 {
				t.Errorf("error event = %+v", ev)
			}
			if bytes.Contains(o.stdout, []byte("ghs_wrong-token-value")) {
				t.Error("the wrong token shows in the events")
			}
		})
	}
}

func TestRunRejectsBadJobs(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		input  string
		modify func(j *runner.Job)
		want   string
	}{
		{name: "not JSON", input: "{nope", want: "bad job"},
		{name: "empty", input: " ", want: "bad job"},
		{name: "wrong version", modify: func(j *runner.Job) { j.Version = 99 }, want: "version 99"},
		{name: "no task id", modify: func(j *runner.Job) { j.TaskID = "" }, want: "task_id"},
		{name: "branch like an option", modify: func(j *runner.Job) { j.Branch = "--upload-pack=evil" }, want: "branch"},
		{name: "branch with a range", modify: func(j *runner.Job) { j.Branch = "a..b" }, want: "branch"},
		{name: "follow-up without head", modify: func(j *runner.Job) { j.FollowUp = true }, want: "expected_head_sha"},
		{name: "template escaping", modify: func(j *runner.Job) { j.Template = "../x" }, want: "template"},
		{name: "unknown agent", modify: func(j *runner.Job) { j.Agent.Name = "gpt" }, want: "agent.name"},
		{name: "command agent without command", modify: func(j *runner.Job) { j.Agent.Command = " " }, want: "agent.command"},
		{name: "no time limit", modify: func(j *runner.Job) { j.TimeLimit = 0 }, want: "time_limit"},
		{name: "credentials in the URL", modify: func(j *runner.Job) { j.CloneURL = "https://x-access-token:abc@example.com/a/b.git" }, want: "credentials"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws := Workspace{Dir: t.TempDir()}
			input := []byte(tc.input)
			if tc.modify != nil {
				job := f.job("")
				tc.modify(&job)
				var err error
				if input, err = json.Marshal(job); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			code := Run(t.Context(), Options{Workspace: ws, Stdin: bytes.NewReader(input), Stdout: &out})
			if code != runner.ExitBadJob {
				t.Fatalf("exit %d, want %d:\n%s", code, runner.ExitBadJob, out.String())
			}
			evs := decodeEvents(t, out.Bytes())
			if len(evs) != 1 || evs[0].Type != runner.EventError || !strings.Contains(evs[0].Message, tc.want) {
				t.Errorf("events = %+v, want one error mentioning %q", evs, tc.want)
			}
			if bytes.Contains(out.Bytes(), []byte("abc@")) {
				t.Error("the URL's credentials show in the events")
			}
		})
	}
}

func TestRunRefusesABusyWorkspace(t *testing.T) {
	ws := Workspace{Dir: t.TempDir()}
	lock, err := ws.lock()
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	var out bytes.Buffer
	if code := Run(t.Context(), Options{Workspace: ws, Stdin: strings.NewReader("{}"), Stdout: &out}); code != runner.ExitInternal {
		t.Fatalf("exit %d, want %d", code, runner.ExitInternal)
	}
	if _, err := os.Stat(ws.EventsFile()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a second runner touched the events file: %v", err)
	}
}

func TestRunLongOutputLines(t *testing.T) {
	f := newFixture(t)
	job := f.job("scripted: stdout-lines 3000; write a.txt " + strings.Repeat("y", 20000) + "; stdout " + strings.Repeat("z", 20000))
	o := runJob(t, t.Context(), job)
	if o.code != runner.ExitOK {
		t.Fatalf("exit %d", o.code)
	}
	logs := o.logs()
	if !strings.Contains(logs, "line 1\n") || !strings.Contains(logs, "line 3000\n") {
		t.Error("lines are missing")
	}
	for _, e := range o.events {
		if len(e.Message) > maxMessage+32 {
			t.Errorf("event %d has a %d-byte message", e.Seq, len(e.Message))
		}
	}
}

func TestRunRepeatedInOneWorkspaceStartsAfresh(t *testing.T) {
	f := newFixture(t)
	ws := Workspace{Dir: t.TempDir()}
	first := runJobIn(t, t.Context(), ws, f.job("scripted: write a.txt x"), nil)
	second := runJobIn(t, t.Context(), ws, f.job("scripted: stdout nothing"), nil)
	if first.code != 0 || second.code != 0 {
		t.Fatalf("exits %d, %d", first.code, second.code)
	}
	if second.events[0].Seq != 1 || second.result(t).Status != runner.StatusNoChanges {
		t.Errorf("second run: %+v", second.result(t))
	}
	if _, err := os.Stat(ws.BundleFile()); !errors.Is(err, os.ErrNotExist) {
		t.Error("the first run's bundle survived")
	}
}

// TestAgentGitConfigRunsNothingAfterTheAgent: a filter driver, a diff
// textconv and a commondir written into .git by the agent are not run or
// followed by agent-runner's own git, which commits the agent's files
// unfiltered.
func TestAgentGitConfigRunsNothingAfterTheAgent(t *testing.T) {
	f := newFixture(t)
	marker := filepath.Join(t.TempDir(), "pwned")
	job := f.job(strings.Join([]string{
		`scripted: append .git/config [filter "x"]\n clean = touch ` + marker + ` && cat\n smudge = touch ` + marker + ` && cat\n[diff "x"]\n textconv = touch ` + marker + ` && cat\n[gpg]\n program = touch ` + marker,
		`scripted: write .gitattributes * filter=x diff=x`,
		`scripted: write hello.txt hello`,
		`scripted: write .git/config.worktree [filter "x"]\n clean = touch ` + marker,
	}, "\n"))
	o := runJob(t, t.Context(), job)
	if o.code != runner.ExitOK {
		t.Fatalf("exit %d, want 0:\n%s", o.code, o.logs())
	}
	res := o.result(t)
	bot := applyBundle(t, f, o.ws.BundleFile(), job.Branch)
	if got := testtool.Git(t, bot, "show", res.Commit+":hello.txt"); got != "hello" {
		t.Errorf("hello.txt = %q", got)
	}
	if cfg, err := os.ReadFile(filepath.Join(o.ws.RepoDir(), ".git", "config")); err != nil || strings.Contains(string(cfg), "touch") {
		t.Errorf("the agent's .git/config survived (%v):\n%s", err, cfg)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a program the agent named in .git/config ran")
	}
}

// TestAgentReplacingDotGitFailsTheCommit: .git turned into a gitdir: file
// pointing at a repository of the agent's is refused, not followed.
func TestAgentReplacingDotGitFailsTheCommit(t *testing.T) {
	f := newFixture(t)
	job := f.job("scripted: git init -q ../elsewhere\nscripted: write hello.txt hello\nscripted: delete-tree .git\nscripted: write .git gitdir: ../elsewhere/.git")
	o := runJob(t, t.Context(), job)
	if o.code != runner.ExitCommit {
		t.Fatalf("exit %d, want %d (commit refused):\n%s", o.code, runner.ExitCommit, o.logs())
	}
	if ev := o.errorEvent(t); !strings.Contains(ev.Message, "replaced the repository's .git") {
		t.Errorf("error = %q", ev.Message)
	}
}
