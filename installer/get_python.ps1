# A private Python 3.11 for run.bat when this computer has none (issue 16): uv, a single program published as
# wheels on PyPI, installs a managed CPython into the app folder (.python\). Nothing outside the app folder
# is touched (no PATH change, no registry entry, no Start menu item). The Windows twin of get_python.sh.
#
#   powershell -NoProfile -ExecutionPolicy Bypass -File installer\get_python.ps1 APP_DIR
#
# Exit 0: installed; 3: declined or not asked (input redirected, TRELLIS_FETCH_PYTHON unset or 0); 1: failed
# (the message says why and what to do). TRELLIS_FETCH_PYTHON=1: download without asking. Sources as in
# get_python.sh: TRELLIS_UV_INDEX_URL / PIP_INDEX_URL / pypi.org for uv (sha256 pinned below), uv's own
# python-build-standalone source for CPython (TRELLIS_PYTHON_MIRROR, UV_PYTHON_INSTALL_MIRROR,
# UV_PYTHON_DOWNLOADS_JSON_URL change it).
param([Parameter(Mandatory = $true)][string]$AppDir)

$ErrorActionPreference = 'Stop'
$UvVersion = '0.13.9'
$PyVersion = '3.11'
$Wheel = "uv-$UvVersion-py3-none-win_amd64.whl"
$WheelSha = '6a44b2ed8111d2f60d2b92627c5dccda3f7ed7570b18ce115e569cd68c28246b'
$Home_ = Join-Path $AppDir '.python'
$Offline = "This computer seems to be offline, or a proxy or firewall blocks the download (behind a proxy, set " +
           "HTTPS_PROXY). Connect and start run.bat again, or install Python $PyVersion yourself (see below)."

function Say([string]$text) { [Console]::Error.WriteLine($text) }

# ---------------------------------------------------------------------------------- consent
$consent = "$env:TRELLIS_FETCH_PYTHON".ToLower()
if ($consent -in @('0', 'no', 'false')) { exit 3 }
if ($consent -notin @('1', 'yes', 'true')) {
    if ([Console]::IsInputRedirected) {
        Say "No console to ask in: not downloading a Python. (Set TRELLIS_FETCH_PYTHON=1 to let run.bat download"
        Say "a private Python $PyVersion into $Home_ without asking.)"
        exit 3
    }
    Say "No Python $PyVersion or 3.12 was found. Trellis Desktop can download a private Python $PyVersion into"
    Say "  $Home_"
    Say "(about 40 MB from pypi.org and github.com; nothing outside this folder is changed)."
    $answer = Read-Host 'Download it now? [Y/n]'
    if ($answer -and -not $answer.StartsWith('y', 'CurrentCultureIgnoreCase')) { exit 3 }
}
if (-not [Environment]::Is64BitOperatingSystem) { Say "Trellis Desktop needs 64-bit Windows."; exit 1 }

# ---------------------------------------------------------------------------------- uv
[Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor 3072   # TLS 1.2
$downloads = Join-Path $Home_ 'downloads'
New-Item -ItemType Directory -Force -Path $downloads | Out-Null
$uvDir = Join-Path $Home_ 'uv'
$uv = Join-Path $uvDir 'uv.exe'
$haveUv = $false
if (Test-Path $uv) { try { $haveUv = ((& $uv --version) -like "uv $UvVersion*") } catch { } }
if (-not $haveUv) {
    $index = if ($env:TRELLIS_UV_INDEX_URL) { $env:TRELLIS_UV_INDEX_URL } elseif ($env:PIP_INDEX_URL) { $env:PIP_INDEX_URL } else { 'https://pypi.org/simple' }
    $index = $index.TrimEnd('/')
    Say "Downloading uv $UvVersion (the tool that installs Python) from $index ..."
    try { $page = (Invoke-WebRequest -UseBasicParsing -Uri "$index/uv/").Content }
    catch { Say "Could not reach $index/uv/ ($($_.Exception.Message))."; Say $Offline; exit 1 }
    $m = [regex]::Match($page, 'href="([^"]*' + [regex]::Escape($Wheel) + '[^"]*)"')
    if (-not $m.Success) { Say "$index has no $Wheel: use PyPI or install Python $PyVersion."; exit 1 }
    $href = $m.Groups[1].Value.Split('#')[0]
    $url = [Uri]::new([Uri]::new("$index/uv/"), $href).AbsoluteUri
    $part = Join-Path $downloads "$Wheel.part"
    try { Invoke-WebRequest -UseBasicParsing -Uri $url -OutFile $part }      # shows PowerShell's progress bar
    catch { Remove-Item -Force -ErrorAction SilentlyContinue $part; Say "Could not download $url."; Say $Offline; exit 1 }
    $got = (Get-FileHash -Algorithm SHA256 -Path $part).Hash.ToLower()
    if ($got -ne $WheelSha) {
        Remove-Item -Force $part
        Say "The downloaded $Wheel is not the published one (sha256 $got, expected $WheelSha); nothing was installed."
        exit 1
    }
    Add-Type -AssemblyName System.IO.Compression.FileSystem
    New-Item -ItemType Directory -Force -Path $uvDir | Out-Null
    $zip = [IO.Compression.ZipFile]::OpenRead($part)
    try {
        $entry = $zip.GetEntry("uv-$UvVersion.data/scripts/uv.exe")
        [IO.Compression.ZipFileExtensions]::ExtractToFile($entry, $uv, $true)
    } finally { $zip.Dispose() }
    Remove-Item -Force $part
}

# ---------------------------------------------------------------------------------- Python itself
Say "Downloading and installing Python $PyVersion into $Home_ ..."
$env:UV_PYTHON_INSTALL_DIR = $Home_
$env:UV_CACHE_DIR = Join-Path $downloads 'uv-cache'
$env:UV_NO_CONFIG = '1'
$uvArgs = @('python', 'install', $PyVersion, '--no-bin', '--no-registry')
if ($env:TRELLIS_PYTHON_MIRROR) { $uvArgs += @('--mirror', $env:TRELLIS_PYTHON_MIRROR) }
& $uv @uvArgs                                                                # uv draws its own progress bar
$rc = $LASTEXITCODE
Remove-Item -Recurse -Force -ErrorAction SilentlyContinue $env:UV_CACHE_DIR
if ($rc -ne 0) {
    Say "uv could not install Python $PyVersion (exit status $rc; its message is above)."
    Say "If it could not connect: $Offline"
    exit 1
}
$py = Get-ChildItem -Directory -Path $Home_ -Filter "cpython-$PyVersion.*" | Sort-Object Name |
      ForEach-Object { Join-Path $_.FullName 'python.exe' } | Where-Object { Test-Path $_ } | Select-Object -Last 1
if (-not $py) { Say "uv reported success, but $Home_ holds no python.exe."; exit 1 }
Say "Python $PyVersion installed: $py"
exit 0
