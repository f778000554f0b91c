package pandadocauth_test

// Processes sharing one FileStore, run as re-executions of this test
// binary (TestFileStoreProcess).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// fileWorkerEnv carries a worker's configuration (JSON).
const fileWorkerEnv = "PANDADOCAUTH_FILESTORE_WORKER"

type fileWorkerConfig struct {
	Mode     string // "hold": take the lock until stdin closes; "refresh": one TokenContext after "go" on stdin
	Path     string
	TokenURL string // of a pandadoctest server with the default client
}

// fileWorker is a running worker process and the lines it prints.
type fileWorker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startFileWorker(t *testing.T, cfg fileWorkerConfig) *fileWorker {
	t.Helper()
	if !slices.Contains([]string{"linux", "darwin", "freebsd", "netbsd", "openbsd", "dragonfly"}, runtime.GOOS) {
		t.Skip("no flock on " + runtime.GOOS)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := &fileWorker{lines: make(chan string, 16)}
	w.cmd = exec.Command(exe, "-test.run=^TestFileStoreProcess$", "-test.count=1", "-test.timeout=60s")
	w.cmd.Env = append(os.Environ(), fileWorkerEnv+"="+string(js))
	w.cmd.Stderr = os.Stderr
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(w.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "worker: "); ok {
				w.lines <- line
			}
		}
	}()
	t.Cleanup(func() {
		w.stdin.Close()
		if w.cmd.ProcessState == nil {
			w.cmd.Process.Kill()
		}
		<-done
		w.cmd.Wait()
	})
	return w
}

// next returns the worker's next line, failing the test if it exits
// first.
func (w *fileWorker) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-w.lines:
		if !ok {
			t.Fatal("the worker exited")
		}
		return line
	case <-time.After(30 * time.Second):
		t.Fatal("the worker said nothing for 30 s")
		return ""
	}
}

// A process holding the FileStore's lock keeps every other process out,
// and the lock dies with it.
func TestFileStoreLockProcesses(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "token.json")
	holder := startFileWorker(t, fileWorkerConfig{Mode: "hold", Path: path})
	if line := holder.next(t); line != "locked" {
		t.Fatalf("worker: %s", line)
	}
	store := &pandadocauth.FileStore{Path: path}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if unlock, err := store.Lock(ctx); err == nil {
		unlock()
		t.Fatal("Lock succeeded while another process held the lock")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock = %v; want context.DeadlineExceeded", err)
	}
	// The holder dies without unlocking.
	if err := holder.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	holder.cmd.Wait()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unlock, err := store.Lock(ctx)
	if err != nil {
		t.Fatalf("Lock after the holder died: %v", err)
	}
	unlock()
}

// Processes sharing a FileStore whose token has expired refresh it once,
// with refresh-token rotation on: the others adopt the saved token
// instead of refreshing with a rotated-away refresh token.
func TestFileStoreRefreshOnceProcesses(t *testing.T) {
	t.Parallel()
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true))
	defer srv.Close()
	// The refresh takes a while, so that processes without a lock would
	// all send theirs before the first one is saved.
	srv.FailNext(pandadoctest.Success(300 * time.Millisecond))
	tok := srv.IssueToken()
	tok.Expiry = time.Now().Add(-time.Minute)
	path := filepath.Join(t.TempDir(), "token.json")
	store := &pandadocauth.FileStore{Path: path}
	if err := store.Save(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	const n = 4
	var workers []*fileWorker
	for range n {
		w := startFileWorker(t, fileWorkerConfig{Mode: "refresh", Path: path, TokenURL: srv.Config().TokenURL})
		if line := w.next(t); line != "ready" {
			t.Fatalf("worker: %s", line)
		}
		workers = append(workers, w)
	}
	for _, w := range workers {
		io.WriteString(w.stdin, "go\n")
	}
	var got []string
	for _, w := range workers {
		got = append(got, w.next(t))
	}
	saved, err := store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range got {
		if line != "token "+saved.AccessToken {
			t.Errorf("a worker got %q; want the saved token", line)
		}
	}
	if posts := srv.TokenRequests("refresh_token"); posts != 1 {
		t.Errorf("%d refreshes; want 1", posts)
	}
}

// TestFileStoreProcess is a worker of the tests above, in a process of
// its own.
func TestFileStoreProcess(t *testing.T) {
	js := os.Getenv(fileWorkerEnv)
	if js == "" {
		t.Skip("helper process of the FileStore process tests")
	}
	var cfg fileWorkerConfig
	if err := json.Unmarshal([]byte(js), &cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := &pandadocauth.FileStore{Path: cfg.Path}
	stdin := bufio.NewReader(os.Stdin)
	switch cfg.Mode {
	case "hold":
		unlock, err := store.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("worker: locked")
		io.Copy(io.Discard, stdin)
		unlock()
	case "refresh":
		tr := http.DefaultTransport.(*http.Transport).Clone()
		defer tr.CloseIdleConnections()
		conf := &pandadocauth.Config{
			ClientID:     pandadoctest.DefaultClientID,
			ClientSecret: pandadoctest.DefaultClientSecret,
			TokenURL:     cfg.TokenURL,
			HTTPClient:   &http.Client{Transport: tr},
		}
		src := &pandadocauth.TokenSource{Config: conf, Store: store}
		fmt.Println("worker: ready")
		if _, err := stdin.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		tok, err := src.TokenContext(ctx)
		src.Wait()
		if err != nil {
			fmt.Println("worker: error " + err.Error())
			return
		}
		fmt.Println("worker: token " + tok.AccessToken)
	}
}
