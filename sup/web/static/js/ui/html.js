// Preact with htm: components written as tagged templates, run by the browser as they are (no JSX, no
// build). The vendored files are under /assets/vendor/ (see docs/dependencies.md).

import { h, render, Fragment } from "preact";
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import htm from "htm";

export const html = htm.bind(h);
export { Fragment, render, useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState };
