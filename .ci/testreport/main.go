// Command testreport reads the output of go test -json on its standard
// input and prints what go test prints without -json: each package's
// result, and the output of the tests that failed. It also lists the
// tests that were skipped, and fails (exit status 1) when a test failed,
// a package did not build, or a test of a package matching -strict was
// skipped, unless its name matches -allow. It ends with a line counting
// the tests that passed, failed and were skipped.
//
//	go test -json ./... | go run .ci/testreport/main.go -strict '/(pgstore|redisstore)$' -allow '^TestFleetWorker$'
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// event is one line of go test -json (see go doc test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output, build-fail
	Test       string
	Output     string
}

func main() {
	strict := flag.String("strict", "", "fail on a skipped test of a package whose import path matches this regular expression")
	allow := flag.String("allow", "", "except for tests whose name matches this regular expression")
	flag.Parse()
	var strictRE, allowRE *regexp.Regexp
	if *strict != "" {
		strictRE = regexp.MustCompile(*strict)
	}
	if *allow != "" {
		allowRE = regexp.MustCompile(*allow)
	}
	os.Exit(report(os.Stdin, os.Stdout, strictRE, allowRE))
}

func report(in io.Reader, out io.Writer, strict, allow *regexp.Regexp) int {
	var (
		failed  bool
		counts  = map[string]int{}
		outputs = map[string]*strings.Builder{} // a running test's output
		skipped []string
		refused []string
	)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// Not an event: go test's own messages.
			fmt.Fprintf(out, "%s\n", line)
			continue
		}
		id := e.Package + " " + e.Test
		switch {
		case e.Action == "build-output":
			fmt.Fprint(out, e.Output)
		case e.Action == "build-fail":
			failed = true
		case e.Test == "":
			// A package's own lines: "ok", "FAIL", panics, TestMain's
			// output.
			if e.Action == "output" && e.Output != "PASS\n" {
				fmt.Fprint(out, e.Output)
			}
			if e.Action == "fail" {
				failed = true
			}
		case e.Action == "output":
			b := outputs[id]
			if b == nil {
				b = &strings.Builder{}
				outputs[id] = b
			}
			b.WriteString(e.Output)
		case e.Action == "pass" || e.Action == "fail" || e.Action == "skip":
			counts[e.Action]++
			text := ""
			if b := outputs[id]; b != nil {
				text = b.String()
			}
			delete(outputs, id)
			switch e.Action {
			case "fail":
				failed = true
				fmt.Fprint(out, text)
			case "skip":
				name := e.Package + "." + e.Test + ": " + skipReason(text)
				skipped = append(skipped, name)
				if strict != nil && strict.MatchString(e.Package) && (allow == nil || !allow.MatchString(e.Test)) {
					refused = append(refused, name)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(out, "testreport:", err)
		return 1
	}
	sort.Strings(skipped)
	if len(skipped) > 0 {
		fmt.Fprintf(out, "skipped:\n")
		for _, s := range skipped {
			fmt.Fprintf(out, "\t%s\n", s)
		}
	}
	if len(refused) > 0 {
		fmt.Fprintf(out, "FAIL: %d tests skipped where every test must run:\n", len(refused))
		for _, s := range refused {
			fmt.Fprintf(out, "\t%s\n", s)
		}
		failed = true
	}
	fmt.Fprintf(out, "tests: %d passed, %d failed, %d skipped\n", counts["pass"], counts["fail"], counts["skip"])
	if failed {
		return 1
	}
	return 0
}

// skipReason is what a skipped test said, without go test's own lines.
func skipReason(output string) string {
	var said []string
	for _, l := range strings.Split(output, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		said = append(said, l)
	}
	return strings.Join(said, " ")
}
