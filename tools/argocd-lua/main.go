// Command argocd-lua runs Argo CD resource customizations (health.lua, actions/discovery.lua,
// actions/<name>/action.lua) the way an Argo CD server runs a customization given in argocd-cm:
// gopher-lua without its standard libraries except package, base and table, a safe `os` with
// only time and date (reached with `local os = require("os")`), the object as the global `obj`,
// the action's parameters as the global `actionParams`, one second per run, and the result
// encoded by layeh.com/gopher-json. An action's result becomes the JSON merge patch of the live
// object that Argo CD sends to the API server.
//
//	argocd-lua health    -script health.lua    -obj object.yaml
//	argocd-lua discovery -script discovery.lua -obj object.yaml
//	argocd-lua action    -script action.lua    -obj object.yaml [-param name=value]... [-now UNIX]
//	argocd-lua test      [-now UNIX] DIR...
//
// `test` walks each DIR for health.lua beside a health_test.yaml and for actions/action_test.yaml,
// in Argo CD's own resource_customizations format, and compares every result exactly: health
// status and message, the set of discovered actions, each action's resulting object. It ends
// with "N passed, N failed" and exits 1 on any failure. In `test`, os.time() and os.date() read a
// fixed clock (-now, default 2026-01-01T00:00:00Z), so an action that stamps the time has one
// expected output.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch"
	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/yaml"
)

// TestClock is the instant os.time() returns in `test` unless -now says otherwise.
const TestClock = 1767225600 // 2026-01-01T00:00:00Z

var healthCodes = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

// Health is what a health.lua answers (gitops-engine's HealthStatus).
type Health struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// Param and Action are Argo CD's ResourceActionParam and ResourceAction.
type Param struct {
	Name string `json:"name,omitempty"`
}

type Action struct {
	Name        string  `json:"name,omitempty"`
	Params      []Param `json:"params,omitempty"`
	Disabled    bool    `json:"disabled,omitempty"`
	IconClass   string  `json:"iconClass,omitempty"`
	DisplayName string  `json:"displayName,omitempty"`
}

// Impacted is one resource an action returns, with the merge patch Argo CD would send for a patch.
type Impacted struct {
	Operation  string         `json:"operation"`
	Object     map[string]any `json:"object"`
	MergePatch map[string]any `json:"mergePatch"` // {} when nothing changes: Argo CD then sends nothing
}

// ---- the VM ---------------------------------------------------------------------------

func runLua(obj map[string]any, script string, params map[string]string, now func() time.Time) ([]byte, lua.LValueType, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	safeOs := osFunctions(now)
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		// As Argo CD does: the safe os functions are registered under the table library's name,
		// so the global `os` does not exist; scripts reach them with require("os").
		{lua.OsLibName, func(l *lua.LState) int { l.Push(l.RegisterModule(lua.TabLibName, safeOs)); return 1 }},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, lua.LTNil, err
		}
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int { l.Push(l.SetFuncs(l.NewTable(), safeOs)); return 1 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	actionParams := l.CreateTable(0, len(params))
	for name, value := range params {
		actionParams.RawSetH(lua.LString(name), lua.LString(value))
	}
	l.SetGlobal("actionParams", actionParams)
	l.SetGlobal("obj", decodeValue(l, obj))
	if err := l.DoString(script); err != nil {
		var apiErr *lua.ApiError
		if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = "" // Argo CD drops it from what users see
			return nil, lua.LTNil, apiErr
		}
		return nil, lua.LTNil, err
	}
	value := l.Get(-1)
	if value.Type() != lua.LTTable {
		return nil, value.Type(), nil
	}
	encoded, err := luajson.Encode(value)
	return encoded, lua.LTTable, err
}

func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case []any:
		array := l.CreateTable(len(v), 0)
		for _, item := range v {
			array.Append(decodeValue(l, item))
		}
		return array
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return table
	}
	return lua.LNil
}

func osFunctions(now func() time.Time) map[string]lua.LGFunction {
	return map[string]lua.LGFunction{
		"time": func(l *lua.LState) int {
			if l.GetTop() == 0 {
				l.Push(lua.LNumber(now().Unix()))
				return 1
			}
			t := l.CheckTable(1)
			field := func(name string, fallback int) int {
				if n, ok := t.RawGetString(name).(lua.LNumber); ok {
					return int(n)
				}
				return fallback
			}
			at := time.Date(field("year", -1), time.Month(field("month", -1)), field("day", -1),
				field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
			l.Push(lua.LNumber(at.Unix()))
			return 1
		},
		"date": func(l *lua.LState) int {
			t, format := now(), "%c"
			if l.GetTop() >= 1 {
				format = l.CheckString(1)
				if strings.HasPrefix(format, "!") {
					t, format = t.UTC(), format[1:]
				}
				if l.GetTop() >= 2 {
					t = time.Unix(l.CheckInt64(2), 0)
				}
			}
			l.Push(lua.LString(strftime(t, format)))
			return 1
		},
	}
}

var strftimeLayouts = map[byte]string{
	'a': "Mon", 'A': "Monday", 'b': "Jan", 'B': "January", 'c': "02 Jan 06 15:04 MST", 'd': "02",
	'F': "2006-01-02", 'H': "15", 'I': "03", 'm': "01", 'M': "04", 'p': "PM", 'S': "05",
	'X': "15:04:05", 'y': "06", 'Y': "2006", 'z': "-0700", 'Z': "MST",
}

func strftime(t time.Time, format string) string {
	var out strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i == len(format)-1 {
			out.WriteByte(format[i])
			continue
		}
		i++
		if layout, ok := strftimeLayouts[format[i]]; ok {
			out.WriteString(t.Format(layout))
		} else if format[i] == '%' {
			out.WriteByte('%')
		} else {
			out.WriteByte('%')
			out.WriteByte(format[i])
		}
	}
	return out.String()
}

// ---- what Argo CD does with each kind of script ------------------------------------------

func runHealth(obj map[string]any, script string, now func() time.Time) (Health, error) {
	encoded, kind, err := runLua(obj, script, nil, now)
	if err != nil {
		return Health{}, err
	}
	switch kind {
	case lua.LTNil:
		return Health{}, nil
	case lua.LTTable:
	default:
		return Health{}, fmt.Errorf("expect table output from Lua script, not %s", kind)
	}
	if string(encoded) == "[]" { // an empty table
		return Health{}, nil
	}
	var health Health
	if err := json.Unmarshal(encoded, &health); err != nil {
		return Health{}, err
	}
	if !healthCodes[health.Status] {
		return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return health, nil
}

func runDiscovery(obj map[string]any, script string, now func() time.Time) ([]Action, error) {
	encoded, kind, err := runLua(obj, script, nil, now)
	if err != nil {
		return nil, err
	}
	if kind != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", kind)
	}
	actions := []Action{}
	if string(encoded) == "[]" {
		return actions, nil
	}
	var table map[string]any
	if err := json.Unmarshal(encoded, &table); err != nil {
		return nil, fmt.Errorf("error unmarshaling action table: %w", err)
	}
	for name, value := range table {
		action := Action{Name: name}
		if fields, ok := value.(map[string]any); ok {
			raw, _ := json.Marshal(fields)
			if err := json.Unmarshal(raw, &action); err != nil {
				return nil, fmt.Errorf("error unmarshaling resource action: %w", err)
			}
			if disabled, ok := fields["disabled"].(bool); ok {
				action.Disabled = disabled
			}
		}
		actions = append(actions, action)
	}
	sort.Slice(actions, func(i, j int) bool { return actions[i].Name < actions[j].Name })
	return actions, nil
}

func runAction(obj map[string]any, script string, params map[string]string, now func() time.Time) ([]Impacted, error) {
	encoded, kind, err := runLua(obj, script, params, now)
	if err != nil {
		return nil, err
	}
	if kind != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", kind)
	}
	var impacted []Impacted
	if bytes.HasPrefix(encoded, []byte("[")) { // the newer form: a list of {resource, operation}
		var list []struct {
			Resource  map[string]any `json:"resource"`
			Operation string         `json:"operation"`
		}
		if err := json.Unmarshal(encoded, &list); err != nil {
			return nil, err
		}
		for _, item := range list {
			if item.Operation != "patch" && item.Operation != "create" {
				return nil, fmt.Errorf("unsupported operation: %s", item.Operation)
			}
			impacted = append(impacted, Impacted{Operation: item.Operation, Object: item.Resource})
		}
	} else {
		var object map[string]any
		if err := json.Unmarshal(encoded, &object); err != nil {
			return nil, err
		}
		impacted = []Impacted{{Operation: "patch", Object: object}}
	}
	live, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	for i := range impacted {
		if impacted[i].Operation != "patch" {
			continue
		}
		impacted[i].Object = cleanReturnedObject(impacted[i].Object, obj)
		changed, err := json.Marshal(impacted[i].Object)
		if err != nil {
			return nil, err
		}
		patch, err := jsonpatch.CreateMergePatch(live, changed)
		if err != nil {
			return nil, fmt.Errorf("error calculating merge patch: %w", err)
		}
		if err := json.Unmarshal(patch, &impacted[i].MergePatch); err != nil {
			return nil, err
		}
	}
	return impacted, nil
}

// cleanReturnedObject undoes what the Lua round trip does to empty objects (an empty table
// encodes as []), where the live object had an object, as Argo CD does.
func cleanReturnedObject(changed, live map[string]any) map[string]any {
	for key, old := range live {
		value, ok := changed[key]
		if !ok {
			continue
		}
		switch value := value.(type) {
		case map[string]any:
			if oldMap, ok := old.(map[string]any); ok {
				changed[key] = cleanReturnedObject(value, oldMap)
			}
		case []any:
			switch old := old.(type) {
			case map[string]any:
				if len(value) == 0 {
					changed[key] = map[string]any{}
				}
			case []any:
				changed[key] = cleanReturnedArray(value, old)
			}
		}
	}
	return changed
}

func cleanReturnedArray(changed, live []any) []any {
	for i := range changed {
		if i >= len(live) {
			break
		}
		switch value := changed[i].(type) {
		case map[string]any:
			if old, ok := live[i].(map[string]any); ok {
				changed[i] = cleanReturnedObject(value, old)
			}
		case []any:
			if old, ok := live[i].([]any); ok {
				changed[i] = cleanReturnedArray(value, old)
			}
		}
	}
	return changed
}

// ---- Argo CD's test files ------------------------------------------------------------------

type healthTests struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus Health `json:"healthStatus"`
	} `json:"tests"`
}

type actionTests struct {
	DiscoveryTests []struct {
		InputPath string   `json:"inputPath"`
		Result    []Action `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action               string            `json:"action"`
		InputPath            string            `json:"inputPath"`
		ExpectedOutputPath   string            `json:"expectedOutputPath"`
		ExpectedErrorMessage string            `json:"expectedErrorMessage"`
		Parameters           map[string]string `json:"parameters"`
	} `json:"actionTests"`
}

type tally struct{ passed, failed int }

func (t *tally) record(name string, problem string) {
	if problem == "" {
		t.passed++
		fmt.Printf("PASS %s\n", name)
		return
	}
	t.failed++
	fmt.Printf("FAIL %s\n    %s\n", name, strings.ReplaceAll(problem, "\n", "\n    "))
}

func runTests(roots []string, now func() time.Time) (tally, error) {
	var t tally
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, entry fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch {
			case entry.Name() == "health.lua":
				return testHealth(&t, filepath.Dir(path), now)
			case entry.Name() == "action_test.yaml":
				return testActions(&t, filepath.Dir(path), now)
			}
			return nil
		})
		if err != nil {
			return t, err
		}
	}
	return t, nil
}

func testHealth(t *tally, dir string, now func() time.Time) error {
	var tests healthTests
	if err := readYAML(filepath.Join(dir, "health_test.yaml"), &tests); err != nil {
		return err
	}
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return err
	}
	if len(tests.Tests) == 0 {
		t.record(filepath.Join(dir, "health_test.yaml"), "no tests")
	}
	for _, test := range tests.Tests {
		name := "health " + filepath.Join(dir, test.InputPath)
		obj, err := readObject(filepath.Join(dir, test.InputPath))
		if err != nil {
			t.record(name, err.Error())
			continue
		}
		got, err := runHealth(obj, string(script), now)
		switch {
		case err != nil:
			t.record(name, err.Error())
		case got != test.HealthStatus:
			t.record(name, fmt.Sprintf("want %s %q\ngot  %s %q", test.HealthStatus.Status, test.HealthStatus.Message, got.Status, got.Message))
		default:
			t.record(name, "")
		}
	}
	return nil
}

func testActions(t *tally, dir string, now func() time.Time) error {
	var tests actionTests
	if err := readYAML(filepath.Join(dir, "action_test.yaml"), &tests); err != nil {
		return err
	}
	discovery, err := os.ReadFile(filepath.Join(dir, "discovery.lua"))
	if err != nil {
		return err
	}
	for _, test := range tests.DiscoveryTests {
		name := "discovery " + filepath.Join(dir, test.InputPath)
		obj, err := readObject(filepath.Join(dir, test.InputPath))
		if err != nil {
			t.record(name, err.Error())
			continue
		}
		got, err := runDiscovery(obj, string(discovery), now)
		if err != nil {
			t.record(name, err.Error())
			continue
		}
		want := append([]Action{}, test.Result...)
		sort.Slice(want, func(i, j int) bool { return want[i].Name < want[j].Name })
		if !reflect.DeepEqual(normalize(want), normalize(got)) {
			t.record(name, fmt.Sprintf("want %s\ngot  %s", compact(want), compact(got)))
			continue
		}
		t.record(name, "")
	}
	tested := map[string]bool{}
	for _, test := range tests.ActionTests {
		tested[test.Action] = true
		name := fmt.Sprintf("action %s %s", test.Action, filepath.Join(dir, test.InputPath))
		script, err := os.ReadFile(filepath.Join(dir, test.Action, "action.lua"))
		if err != nil {
			t.record(name, err.Error())
			continue
		}
		obj, err := readObject(filepath.Join(dir, test.InputPath))
		if err != nil {
			t.record(name, err.Error())
			continue
		}
		impacted, err := runAction(obj, string(script), test.Parameters, now)
		if test.ExpectedErrorMessage != "" {
			if err == nil || err.Error() != test.ExpectedErrorMessage {
				t.record(name, fmt.Sprintf("want error %q, got %v", test.ExpectedErrorMessage, err))
			} else {
				t.record(name, "")
			}
			continue
		}
		if err != nil {
			t.record(name, err.Error())
			continue
		}
		want, err := readObject(filepath.Join(dir, test.ExpectedOutputPath))
		if err != nil {
			t.record(name, err.Error())
			continue
		}
		if len(impacted) != 1 || impacted[0].Operation != "patch" {
			t.record(name, fmt.Sprintf("want one patched object, got %s", compact(impacted)))
			continue
		}
		if got := impacted[0].Object; !reflect.DeepEqual(normalize(want), normalize(got)) {
			wantJSON, _ := json.Marshal(want)
			gotJSON, _ := json.Marshal(got)
			difference, _ := jsonpatch.CreateMergePatch(wantJSON, gotJSON)
			t.record(name, fmt.Sprintf("output differs from %s; merge patch from it to the output: %s",
				test.ExpectedOutputPath, difference))
			continue
		}
		t.record(name, "")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, entry := range entries {
		if _, err := os.Stat(filepath.Join(dir, entry.Name(), "action.lua")); err == nil && !tested[entry.Name()] {
			t.record("action "+filepath.Join(dir, entry.Name()), "has no test in action_test.yaml")
		}
	}
	return nil
}

func readYAML(path string, into any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.UnmarshalStrict(raw, into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func readObject(path string) (map[string]any, error) {
	obj := map[string]any{}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

// normalize gives two values that mean the same JSON the same Go form (numbers as float64).
func normalize(value any) any {
	raw, _ := json.Marshal(value)
	var out any
	_ = json.Unmarshal(raw, &out)
	return out
}

func compact(value any) string {
	raw, _ := json.Marshal(value)
	return string(raw)
}

// ---- command line ------------------------------------------------------------------------

type paramFlags map[string]string

func (p paramFlags) String() string { return "" }

func (p paramFlags) Set(value string) error {
	name, val, ok := strings.Cut(value, "=")
	if !ok {
		return fmt.Errorf("want name=value, got %q", value)
	}
	p[name] = val
	return nil
}

func clock(flagValue string) (func() time.Time, error) {
	if flagValue == "" {
		return time.Now, nil
	}
	seconds, err := strconv.ParseInt(flagValue, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("-now: %w", err)
	}
	return func() time.Time { return time.Unix(seconds, 0) }, nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-lua:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: argocd-lua health|discovery|action|test ...")
	}
	command, flags := args[0], flag.NewFlagSet(args[0], flag.ContinueOnError)
	script := flags.String("script", "", "the Lua script")
	object := flags.String("obj", "", "the object, YAML or JSON")
	now := flags.String("now", "", "os.time() in Unix seconds (default: the real time; in test: 2026-01-01T00:00:00Z)")
	params := paramFlags{}
	flags.Var(params, "param", "an action parameter, name=value (repeatable)")
	if err := flags.Parse(args[1:]); err != nil {
		return err
	}
	if command == "test" && *now == "" {
		*now = strconv.Itoa(TestClock)
	}
	at, err := clock(*now)
	if err != nil {
		return err
	}
	if command == "test" {
		if flags.NArg() == 0 {
			return errors.New("test: name at least one folder")
		}
		result, err := runTests(flags.Args(), at)
		if err != nil {
			return err
		}
		fmt.Printf("%d passed, %d failed\n", result.passed, result.failed)
		if result.failed > 0 || result.passed == 0 {
			os.Exit(1)
		}
		return nil
	}
	if *script == "" || *object == "" {
		return fmt.Errorf("%s: -script and -obj are required", command)
	}
	source, err := os.ReadFile(*script)
	if err != nil {
		return err
	}
	obj, err := readObject(*object)
	if err != nil {
		return err
	}
	var result any
	switch command {
	case "health":
		result, err = runHealth(obj, string(source), at)
	case "discovery":
		result, err = runDiscovery(obj, string(source), at)
	case "action":
		result, err = runAction(obj, string(source), params, at)
	default:
		return fmt.Errorf("unknown command %q", command)
	}
	if err != nil {
		return err
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	return encoder.Encode(result)
}
