package network

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// A detached container's log keeps its command's stdout and stderr apart, with the
// time of each line: one JSON record a line, as Docker's json-file driver writes
// them ({"log":"text\n","stream":"stdout","time":"..."}). Containers started by an
// older ctnet have a plain log (LogPath), which reads as stdout without times.

// LogEntry is one line (or a piece of a very long one) a container's command wrote.
type LogEntry struct {
	Log    string    `json:"log"`
	Stream string    `json:"stream"` // stdout or stderr
	Time   time.Time `json:"time,omitzero"`
}

// logRecordsPath is the file of a container's log records.
func logRecordsPath(c *Container) string { return filepath.Join(c.RuntimeDir, "log.json") }

// maxLogLine is the most a record holds, as Docker's at 16 KiB: a longer line is
// several records.
const maxLogLine = 16 << 10

// drainAfterExit is how long the log waits, once the command has ended, for what
// is still in its pipes: a process the command left behind outside any namespace
// ctnet ends (--network host) may hold them open for ever.
const drainAfterExit = time.Second

// containerLog writes a container's log records from its command's pipes.
type containerLog struct {
	mu      sync.Mutex
	f       *os.File
	readers sync.WaitGroup
	pipes   []*os.File // read ends, to end reading once the command has ended
	writers []*os.File // write ends, the command's stdout and stderr
}

func openContainerLog(c *Container) (*containerLog, error) {
	f, err := os.OpenFile(logRecordsPath(c), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &containerLog{f: f}, nil
}

// stream returns the write end of a pipe whose lines become records of stream.
func (l *containerLog) stream(stream string) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	l.pipes, l.writers = append(l.pipes, r), append(l.writers, w)
	l.readers.Add(1)
	go func() {
		defer l.readers.Done()
		buf := make([]byte, maxLogLine)
		for {
			n, err := r.Read(buf)
			// A record per line; what follows the last newline is a record too,
			// at once, so that a prompt or a stream without newlines is seen
			// as it is written.
			for chunk := buf[:n]; len(chunk) > 0; {
				end := bytes.IndexByte(chunk, '\n') + 1
				if end == 0 {
					end = len(chunk)
				}
				l.write(stream, string(chunk[:end]))
				chunk = chunk[end:]
			}
			if err != nil {
				return
			}
		}
	}()
	return w, nil
}

// write appends one record; a record is one write, so that readers following the
// file see whole records.
func (l *containerLog) write(stream, text string) {
	b, err := json.Marshal(LogEntry{Log: text, Stream: stream, Time: time.Now().UTC()})
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Write(append(b, '\n'))
}

// AppendLog adds a line of ctnet's own to a detached container's log, as a stderr
// record: what its supervisor has to say while the command runs (a firewall repair).
func AppendLog(c *Container, line string) error {
	f, err := os.OpenFile(logRecordsPath(c), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	l := &containerLog{f: f}
	l.write("stderr", line+"\n")
	return f.Close()
}

// closeWriters closes this process's copies of the pipes' write ends, once the
// command has them.
func (l *containerLog) closeWriters() {
	for _, w := range l.writers {
		w.Close()
	}
	l.writers = nil
}

// close ends the log once the command has ended: what is left in the pipes is
// written, for at most drainAfterExit.
func (l *containerLog) close() {
	l.closeWriters()
	for _, r := range l.pipes {
		r.SetReadDeadline(time.Now().Add(drainAfterExit))
	}
	l.readers.Wait()
	for _, r := range l.pipes {
		r.Close()
	}
	l.f.Close()
}

// LogReader reads a container's log entries in order.
type LogReader struct {
	f      *os.File
	br     *bufio.Reader
	legacy bool
	// partial is a record whose end has not been written yet.
	partial []byte
}

// OpenLog opens the log of a container run with RunOptions.Log: nil and no error
// when its command has not started yet.
func OpenLog(c *Container) (*LogReader, error) {
	f, err := os.Open(logRecordsPath(c))
	legacy := false
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.Open(LogPath(c))
		legacy = true
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &LogReader{f: f, br: bufio.NewReaderSize(f, maxLogLine), legacy: legacy}, nil
}

// Next returns the next entry, or io.EOF when the log holds no more yet (more may
// be appended while the container runs).
func (r *LogReader) Next() (LogEntry, error) {
	for {
		line, err := r.br.ReadSlice('\n')
		if r.legacy {
			if len(line) > 0 {
				return LogEntry{Log: string(line), Stream: "stdout"}, nil
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			return LogEntry{}, err
		}
		r.partial = append(r.partial, line...)
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil:
			return LogEntry{}, err // a partial record waits for its end
		}
		var e LogEntry
		jerr := json.Unmarshal(r.partial, &e)
		r.partial = r.partial[:0]
		if jerr == nil {
			return e, nil
		}
		// A record cut short (the supervisor was killed mid-write) is skipped.
	}
}

func (r *LogReader) Close() error { return r.f.Close() }
