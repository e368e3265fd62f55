package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentbot/agentbot"
	"github.com/agentbot/agentbot/github"
	"github.com/agentbot/agentbot/internal/gitserver"
)

// benchTemplate is the generated repository, made once per process (the
// benchmark function runs more than once) and copied into each git server.
var benchTemplate struct {
	once  sync.Once
	dir   string
	files int
	bytes int64
	err   error
}

// benchRepo puts the benchmark's repository on git: BENCH_FILES files
// (default 5,000) of random text totalling BENCH_MB megabytes (default 50).
func benchRepo(tb testing.TB, git *gitserver.Server) (files int, bytes int64) {
	tb.Helper()
	benchTemplate.once.Do(func() {
		benchTemplate.dir, benchTemplate.err = os.MkdirTemp("", "agentbot-bench-repo-")
		if benchTemplate.err != nil {
			return
		}
		gen := gitserver.New(tb, nil)
		benchTemplate.files, benchTemplate.bytes = generateRepo(gen)
		benchTemplate.err = exec.Command("cp", "-a", gen.BarePath(repo.Owner, repo.Name), filepath.Join(benchTemplate.dir, "repo.git")).Run()
	})
	if benchTemplate.err != nil {
		tb.Fatal(benchTemplate.err)
	}
	dst := git.BarePath(repo.Owner, repo.Name)
	must(tb, os.MkdirAll(filepath.Dir(dst), 0o755))
	if out, err := exec.Command("cp", "-a", filepath.Join(benchTemplate.dir, "repo.git"), dst).CombinedOutput(); err != nil {
		tb.Fatalf("copy the benchmark repository: %v: %s", err, out)
	}
	return benchTemplate.files, benchTemplate.bytes
}

func generateRepo(git *gitserver.Server) (files int, bytes int64) {
	files, mb := 5000, 50
	if v, err := strconv.Atoi(os.Getenv("BENCH_FILES")); err == nil && v > 0 {
		files = v
	}
	if v, err := strconv.Atoi(os.Getenv("BENCH_MB")); err == nil && v > 0 {
		mb = v
	}
	per := mb << 20 / files
	content := map[string]string{}
	buf := make([]byte, per/2)
	for i := 0; i < files; i++ {
		_, _ = rand.Read(buf)
		content[fmt.Sprintf("pkg%02d/file%04d.txt", i%50, i)] = hex.EncodeToString(buf)
		bytes += int64(per)
	}
	git.CreateRepo(repo.Owner, repo.Name, "main", content)
	return files, bytes
}

// BenchmarkEndToEnd measures what agentbot adds around an agent: the time
// from a delivery to its runner's start, and the whole task (acknowledge,
// clone, branch, commit, bundle, verify, push, draft PR, final comment)
// with an agent that only writes one file, on a generated repository of
// 5,000 files / 50 MB — against the same git work done by plain git
// commands (clone, branch, commit, bundle, push). scripts/bench-e2e.sh runs
// it and records the figures in docs/benchmarks.md.
func BenchmarkEndToEnd(b *testing.B) {
	var files int
	var size int64
	w := newWorldWith(b, func(g *gitserver.Server) { files, size = benchRepo(b, g) })
	// The sandbox's uid passes through the test's temporary directory to
	// the data directory's agent-runner and repository mirrors, as it
	// would through /var/lib.
	must(b, os.Chmod(filepath.Dir(w.dataDir), 0o711))
	must(b, os.Chmod(filepath.Dir(bins.scripted), 0o711))
	bot := w.start("AGENTBOT_LOG_LEVEL=info", "AGENTBOT_LOCAL_ISOLATION="+orDefault(os.Getenv("BENCH_ISOLATION"), "auto"))

	var starts, totals, plains, plainClones []time.Duration
	phases := map[string][]time.Duration{}
	// The first task fills the repository mirror; the later ones clone
	// from it (repeat tasks).
	var firstPhases map[string]time.Duration
	repeatPhases := map[string][]time.Duration{}
	fallbacks := 0 // tasks that found the mirror unusable
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Each iteration is a pair, agentbot's task and plain git's, taken
		// in turn: A B, B A, A B, …, so neither always comes second and
		// finds the git server's caches warm.
		plainFirst := i%2 == 1
		if plainFirst {
			b.StopTimer()
			total, clone := plainGit(b, w, i)
			plains, plainClones = append(plains, total), append(plainClones, clone)
			b.StartTimer()
		}
		num := 10000 + 10*i // PR numbers share the issues' sequence
		w.gh.AddIssue(repo, num, fmt.Sprintf("Bench %d", i), "", "alice")
		sent := time.Now()
		bot.deliver("issues", labeled(num, fmt.Sprintf("Bench %d", i), "scripted: write bench.txt run "+strconv.Itoa(i), "alice"))
		task := bot.taskFor(num, agentbot.KindNew)
		page := bot.waitDone(task.ID, 5*time.Minute)
		if page.Task.State != agentbot.StateSucceeded || page.Result.PRURL == "" {
			b.Fatalf("task ended %s: %+v", page.Task.State, page.Result)
		}
		if len(page.Timeline) == 0 {
			b.Fatal("no timeline")
		}
		for _, ev := range page.Log {
			if strings.Contains(ev.Message, "mirror is not usable") {
				fallbacks++
				fmt.Printf("BENCH-E2E-FALLBACK %s\n", ev.Message)
			}
		}
		if i == 0 {
			firstPhases = map[string]time.Duration{}
		}
		for _, ph := range page.Timeline {
			d := time.Duration(ph.Seconds * float64(time.Second))
			phases[ph.Name] = append(phases[ph.Name], d)
			if i == 0 {
				firstPhases[ph.Name] = d
			} else {
				repeatPhases[ph.Name] = append(repeatPhases[ph.Name], d)
			}
		}
		first, end := startEnd(page.Timeline)
		starts = append(starts, first.Sub(sent))
		totals = append(totals, end.Sub(sent))

		if !plainFirst {
			b.StopTimer()
			total, clone := plainGit(b, w, i)
			plains, plainClones = append(plains, total), append(plainClones, clone)
			b.StartTimer()
		}
		order := "agentbot"
		if plainFirst {
			order = "plain-git"
		}
		fmt.Printf("BENCH-E2E-PAIR pair=%d first=%s task_s=%.3f plain_git_s=%.3f ratio=%.3f\n",
			i+1, order, totals[i].Seconds(), plains[i].Seconds(), totals[i].Seconds()/plains[i].Seconds())
	}
	b.StopTimer()
	ratios := make([]float64, b.N)
	for i := range ratios {
		ratios[i] = totals[i].Seconds() / plains[i].Seconds()
	}
	sort.Float64s(ratios)
	start, total, plain := median(starts), median(totals), median(plains)
	histStart := metricMean(b, bot, "agentbot_dispatch_time_to_start_seconds")
	b.ReportMetric(float64(start.Microseconds())/1000, "ms-to-first-event")
	b.ReportMetric(histStart*1000, "ms-to-runner-start")
	b.ReportMetric(total.Seconds(), "s-task")
	b.ReportMetric(plain.Seconds(), "s-plain-git")
	b.ReportMetric(ratios[len(ratios)/2], "ratio")
	// Where the task's time goes, by phase (medians), for the record.
	var names []string
	for name := range phases {
		names = append(names, name)
	}
	sort.Strings(names)
	var parts []string
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s:%.3f", strings.ReplaceAll(name, " ", "_"), median(phases[name]).Seconds()))
	}
	fmt.Printf("BENCH-E2E-PHASES %s\n", strings.Join(parts, ","))
	printMirrorFigures(totals, plains, plainClones, firstPhases, repeatPhases)
	unavailable := strings.Count(bot.log(), "no repository mirror for this run")
	fmt.Printf("BENCH-E2E-MIRROR-USE fallbacks=%d unavailable=%d\n", fallbacks, unavailable)
	if fallbacks+unavailable > 0 {
		fmt.Println(bot.log())
	}
	// One line for scripts/bench-e2e.sh.
	// ratio is the median of the pairs' ratios (each pair ran under the
	// same conditions), with their min and max.
	fmt.Printf("BENCH-E2E runs=%d files=%d mb=%d isolation=%s to_runner_start_ms=%.1f to_first_event_ms=%.1f task_s=%.3f plain_git_s=%.3f ratio=%.2f ratio_min=%.2f ratio_max=%.2f\n",
		b.N, files, size>>20, bot.isolation(), histStart*1000, float64(start.Microseconds())/1000, total.Seconds(), plain.Seconds(),
		ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1])
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// printMirrorFigures prints the repository mirror's figures: the first
// task (which fills the mirror) against its pair's plain git, and the
// clone and push phases of the first and of the repeat tasks against plain
// git's clone (medians).
func printMirrorFigures(totals, plains, plainClones []time.Duration, first map[string]time.Duration, repeat map[string][]time.Duration) {
	med := func(ds []time.Duration) float64 {
		if len(ds) == 0 {
			return 0
		}
		return median(ds).Seconds()
	}
	plainClone := med(plainClones)
	repeatClone, repeatPush := med(repeat[runnerPhaseCloning]), med(repeat[phasePushing])
	speedup := 0.0
	if repeatClone > 0 {
		speedup = plainClone / repeatClone
	}
	fmt.Printf("BENCH-E2E-MIRROR first_task_s=%.3f first_plain_git_s=%.3f first_ratio=%.2f first_clone_s=%.3f first_push_s=%.3f repeat_clone_s=%.3f repeat_push_s=%.3f plain_clone_s=%.3f clone_speedup=%.1f repeats=%d\n",
		totals[0].Seconds(), plains[0].Seconds(), totals[0].Seconds()/plains[0].Seconds(),
		first[runnerPhaseCloning].Seconds(), first[phasePushing].Seconds(), repeatClone, repeatPush, plainClone, speedup, len(repeat[runnerPhaseCloning]))
}

// The timeline's names of the clone and push phases.
const (
	runnerPhaseCloning = "cloning"
	phasePushing       = "pushing"
)

// plainGit does the git work of a task by hand, with a token minted the
// same way: clone over HTTP, branch, commit one file, bundle, push. It
// returns the whole and the clone's share.
func plainGit(tb testing.TB, w *world, i int) (total, clone time.Duration) {
	tb.Helper()
	client, err := github.New(github.Config{BaseURL: w.gh.URL, AppID: w.gh.AppID, PrivateKey: w.gh.PrivateKeyPEM})
	if err != nil {
		tb.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	tok, err := client.TokenFor(ctx, installation, repo, github.Permissions{"contents": "write"})
	if err != nil {
		tb.Fatal(err)
	}
	u, _ := url.Parse(w.git.CloneURL(repo.Owner, repo.Name))
	u.User = url.UserPassword("x-access-token", tok.Value)
	dir := tb.TempDir()
	work := filepath.Join(dir, "repo")
	branch := fmt.Sprintf("plain/bench-%d", i)
	start := time.Now()
	run := func(dir string, args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0",
			"GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@example.com", "GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run(dir, "clone", "--quiet", "--no-tags", "--single-branch", "--filter=blob:none", "--branch", "main", u.String(), work)
	clone = time.Since(start)
	run(work, "checkout", "--quiet", "-b", branch)
	if err := os.WriteFile(filepath.Join(work, "bench.txt"), []byte(fmt.Sprintf("plain %d\n", i)), 0o644); err != nil {
		tb.Fatal(err)
	}
	run(work, "add", "-A")
	run(work, "commit", "--quiet", "-m", "bench")
	run(work, "bundle", "create", "--quiet", filepath.Join(dir, "result.bundle"), "main.."+branch)
	run(work, "push", "--quiet", "origin", branch)
	return time.Since(start), clone
}

// metricMean reads a histogram's mean from agentbot's /metrics.
func metricMean(tb testing.TB, bot *bot, name string) float64 {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodGet, bot.base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+bot.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var sum, count float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case name + "_sum":
			sum = v
		case name + "_count":
			count = v
		}
	}
	if count == 0 {
		return 0
	}
	return sum / count
}
